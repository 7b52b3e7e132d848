"""The Rust endpoint index (`epsync._core.EndpointIndex`): ordering, filters, paging and profile inheritance."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from epsync._core import EndpointIndex, Selector

Key = tuple[str, str]


def make_index(*endpoints: tuple[str, str, str, dict[str, str], list[str], int]) -> EndpointIndex:
    index = EndpointIndex()
    index.upsert_endpoints(endpoints)
    return index


def all_keys(index: EndpointIndex) -> list[Key]:
    return index.query("", "", None, None, 0)


def test_keys_are_ordered_as_tuples_not_as_joined_strings() -> None:
    # Joined into "ns/name", "a-b/x" would sort before "a/y"; as tuples, "a" < "a-b".
    index = make_index(("a-b", "x", "n", {}, [], 1), ("a", "y", "n", {}, [], 1), ("a", "b", "n", {}, [], 1))
    assert all_keys(index) == [("a", "b"), ("a", "y"), ("a-b", "x")]
    assert len(index) == 3


def test_upsert_replaces_the_previous_entry() -> None:
    index = make_index(("ns", "e", "n1", {"a": "1"}, [], 1))
    index.upsert_endpoints([("ns", "e", "n2", {"a": "2"}, [], 1)])
    assert len(index) == 1
    assert index.effective_labels("ns", "e") == {"a": "2"}
    assert index.query("", "n1", None, None, 0) == []
    assert index.query("", "n2", None, None, 0) == [("ns", "e")]


def test_upsert_records_the_resource_version() -> None:
    index = make_index(("ns", "e", "n", {}, [], 41))
    assert index.resource_version("ns", "e") == 41
    index.upsert_endpoints([("ns", "e", "n", {}, [], 2**63)])
    assert index.resource_version("ns", "e") == 2**63
    assert index.resource_version("ns", "other") is None
    with pytest.raises(OverflowError):
        index.upsert_endpoints([("ns", "e", "n", {}, [], -1)])


def test_remove_ignores_missing_keys() -> None:
    index = make_index(("ns", "e", "n", {}, [], 1))
    index.remove_endpoints([("ns", "missing"), ("other", "e")])
    assert len(index) == 1
    index.remove_endpoints([("ns", "e")])
    assert len(index) == 0
    assert index.effective_labels("ns", "e") is None


@pytest.fixture
def sample() -> EndpointIndex:
    return make_index(
        ("default", "web-1", "node-a", {"app": "web", "tier": "a"}, [], 1),
        ("default", "web-2", "node-b", {"app": "web", "tier": "c"}, [], 1),
        ("default", "db-1", "node-a", {"app": "db"}, [], 1),
        ("prod", "web-1", "node-a", {"app": "web", "tier": "b"}, [], 1),
        ("prod-eu", "web-1", "node-b", {"app": "web", "tier": "a"}, [], 1),
    )


def test_namespace_node_and_selector_filters(sample: EndpointIndex) -> None:
    web = Selector("app == 'web' && tier in {'a', 'b'}")
    assert sample.query("default", "", None, None, 0) == [
        ("default", "db-1"),
        ("default", "web-1"),
        ("default", "web-2"),
    ]
    assert sample.query("prod", "", None, None, 0) == [("prod", "web-1")]
    assert sample.query("", "node-a", None, None, 0) == [("default", "db-1"), ("default", "web-1"), ("prod", "web-1")]
    assert sample.query("", "", web, None, 0) == [("default", "web-1"), ("prod", "web-1"), ("prod-eu", "web-1")]
    assert sample.query("default", "node-a", web, None, 0) == [("default", "web-1")]
    assert sample.count("", "", web) == 3
    assert sample.count("", "node-b", None) == 2
    assert sample.count("nowhere", "", None) == 0


def test_paging_with_after_and_limit(sample: EndpointIndex) -> None:
    everything = all_keys(sample)
    for limit in range(1, len(everything) + 2):
        walked: list[Key] = []
        after: Key | None = None
        while page := sample.query("", "", None, after, limit):
            assert len(page) <= limit
            walked += page
            after = page[-1]
        assert walked == everything
    assert sample.query("", "", None, ("default", "m"), 2) == [("default", "web-1"), ("default", "web-2")]
    assert sample.query("default", "", None, ("a", "z"), 1) == [("default", "db-1")]
    assert sample.query("default", "", None, ("prod", ""), 0) == []


def test_effective_labels_come_from_own_labels_then_profiles_in_order() -> None:
    index = EndpointIndex()
    index.upsert_profiles([("p1", {"a": "p1", "b": "p1"}), ("p2", {"b": "p2", "c": "p2"})])
    index.upsert_endpoints(
        [
            ("ns", "e1", "n", {"a": "own"}, ["p1", "p2"], 1),
            ("ns", "e2", "n", {}, ["p2", "p1"], 1),
            ("ns", "e3", "n", {"z": "own"}, ["missing"], 1),
        ]
    )
    assert index.effective_labels("ns", "e1") == {"a": "own", "b": "p1", "c": "p2"}
    assert index.effective_labels("ns", "e2") == {"a": "p1", "b": "p2", "c": "p2"}
    assert index.effective_labels("ns", "e3") == {"z": "own"}
    assert index.query("", "", Selector("b == 'p2'"), None, 0) == [("ns", "e2")]


def test_profile_upsert_and_remove_re_evaluate_the_endpoints_that_name_them() -> None:
    index = make_index(("ns", "e1", "n", {}, ["p"], 1), ("ns", "e2", "n", {}, [], 1))
    role = Selector("role == 'db'")
    assert index.count("", "", role) == 0
    index.upsert_profiles([("p", {"role": "db"})])
    assert index.query("", "", role, None, 0) == [("ns", "e1")]
    index.upsert_profiles([("p", {"role": "web"})])
    assert index.count("", "", role) == 0
    index.upsert_profiles([("p", {"role": "db"})])
    index.remove_profiles(["p", "never-existed"])
    assert index.count("", "", role) == 0
    assert index.effective_labels("ns", "e1") == {}


def test_own_label_wins_over_profile() -> None:
    index = EndpointIndex()
    index.upsert_profiles([("p", {"app": "from-profile"})])
    index.upsert_endpoints([("ns", "e", "n", {"app": "own"}, ["p"], 1)])
    assert index.effective_labels("ns", "e") == {"app": "own"}
    assert index.count("", "", Selector("app == 'own'")) == 1


def test_a_bad_entry_changes_nothing() -> None:
    index = EndpointIndex()
    with pytest.raises(TypeError):
        index.upsert_endpoints([("ns", "good", "n", {}, [], 1), ("ns", "bad", "n", {"a": 1}, [], 1)])  # type: ignore[dict-item]
    assert len(index) == 0


def test_profile_names_must_be_a_sequence_of_strings() -> None:
    with pytest.raises(TypeError):
        EndpointIndex().upsert_endpoints([("ns", "e", "n", {}, "p", 1)])


# ---- model check ----


@dataclass
class ModelEndpoint:
    node: str
    labels: dict[str, str]
    profiles: list[str]
    resource_version: int


NAMESPACES = st.sampled_from(["", "a", "a-b", "b", "kube-system"])
NAMES = st.sampled_from(["x", "y", "z", "x-1"])
NODES = st.sampled_from(["n1", "n2"])
PROFILE_NAMES = st.sampled_from(["p", "q", "r"])
LABELS = st.dictionaries(st.sampled_from(["app", "tier", "projectcalico.org/namespace"]), st.sampled_from(["1", "2"]))
SELECTORS = [
    None,
    Selector("app == '1'"),
    Selector("app == '1' && tier in {'1', '2'}"),
    Selector("tier != '2' || !has(projectcalico.org/namespace)"),
]


class IndexMatchesModel(RuleBasedStateMachine):
    """Random upserts and removes of endpoints and profiles; queries agree with a plain Python model."""

    def __init__(self) -> None:
        super().__init__()
        self.index = EndpointIndex()
        self.endpoints: dict[Key, ModelEndpoint] = {}
        self.profiles: dict[str, dict[str, str]] = {}

    @rule(
        batch=st.lists(
            st.tuples(NAMESPACES, NAMES, NODES, LABELS, st.lists(PROFILE_NAMES, max_size=3), st.integers(1, 2**63 - 1)),
            min_size=1,
            max_size=4,
        )
    )
    def upsert_endpoints(self, batch: list[tuple[str, str, str, dict[str, str], list[str], int]]) -> None:
        self.index.upsert_endpoints(batch)
        for namespace, name, node, labels, profiles, resource_version in batch:
            self.endpoints[namespace, name] = ModelEndpoint(node, labels, profiles, resource_version)

    @rule(keys=st.lists(st.tuples(NAMESPACES, NAMES), max_size=3))
    def remove_endpoints(self, keys: list[Key]) -> None:
        self.index.remove_endpoints(keys)
        for key in keys:
            self.endpoints.pop(key, None)

    @rule(batch=st.lists(st.tuples(PROFILE_NAMES, LABELS), max_size=3))
    def upsert_profiles(self, batch: list[tuple[str, dict[str, str]]]) -> None:
        self.index.upsert_profiles(batch)
        self.profiles.update(batch)

    @rule(names=st.lists(PROFILE_NAMES, max_size=2))
    def remove_profiles(self, names: list[str]) -> None:
        self.index.remove_profiles(names)
        for name in names:
            self.profiles.pop(name, None)

    def effective(self, endpoint: ModelEndpoint) -> dict[str, str]:
        labels = dict(endpoint.labels)
        for profile in endpoint.profiles:
            for key, value in self.profiles.get(profile, {}).items():
                labels.setdefault(key, value)
        return labels

    def expected(self, namespace: str, node: str, selector: Selector | None) -> list[Key]:
        return sorted(
            key
            for key, endpoint in self.endpoints.items()
            if (not namespace or key[0] == namespace)
            and (not node or endpoint.node == node)
            and (selector is None or selector.matches(self.effective(endpoint)))
        )

    @invariant()
    def effective_labels_agree(self) -> None:
        assert len(self.index) == len(self.endpoints)
        for (namespace, name), endpoint in self.endpoints.items():
            assert self.index.effective_labels(namespace, name) == self.effective(endpoint)
            assert self.index.resource_version(namespace, name) == endpoint.resource_version

    @invariant()
    def queries_agree(self) -> None:
        for namespace in ["", "a", "a-b"]:
            for node in ["", "n1"]:
                for selector in SELECTORS:
                    expected = self.expected(namespace, node, selector)
                    assert self.index.query(namespace, node, selector, None, 0) == expected
                    assert self.index.count(namespace, node, selector) == len(expected)
                    for after in [("a", "x"), ("a-b", "")]:
                        assert (
                            self.index.query(namespace, node, selector, after, 2)
                            == [k for k in expected if k > after][:2]
                        )


TestIndexMatchesModel = IndexMatchesModel.TestCase
TestIndexMatchesModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
