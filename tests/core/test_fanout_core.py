"""The Rust watch fan-out (`EndpointIndex.apply`, `replay`, `diff`) against brute force in Python.

A hypothesis state machine writes random batches of endpoint and profile changes and
registers random watcher groups (namespace, node and selector filters, the selectors built
from `tests/selector_reference.py` trees). After every batch each group's deliveries,
applied in order to a dict, must equal the endpoints that match its filter, computed here
with the reference evaluator and profile inheritance; the events themselves must be exactly
the per-revision transitions brute force finds (so the candidate pruning misses nothing and
a profile edit is silent for endpoints that keep matching); replays must repeat what was
delivered; and diffs must agree with brute force.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from epsync._core import ADDED, DELETED, MODIFIED, EndpointIndex, Selector
from tests.selector_reference import All, And, Compare, Has, InSet, Node, Not, Or, evaluate, render

Key = tuple[str, str]
Event = tuple[str, str, int, int]

# Small universes, so random selectors, labels and profiles meet often.
NAMESPACES = ["a", "b"]
NAMES = ["x", "y", "z"]
NODES = ["n1", "n2"]
PROFILES = ["kns.a", "p", "q"]
KEYS = st.sampled_from(["app", "env", "tier"])
VALUES = st.sampled_from(["1", "2"])
LABELS = st.dictionaries(KEYS, VALUES, max_size=3)

LEAVES: st.SearchStrategy[Node] = st.one_of(
    st.builds(All, st.booleans()),
    st.builds(Has, KEYS),
    st.builds(Compare, KEYS, st.sampled_from(["==", "==", "!=", "starts with"]), VALUES),
    st.builds(InSet, KEYS, st.lists(VALUES, max_size=2).map(tuple), st.booleans()),
)
TREES: st.SearchStrategy[Node] = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.builds(Not, inner), st.builds(And, inner, inner), st.builds(Or, inner, inner)),
    max_leaves=4,
)
FILTERS = st.tuples(st.sampled_from(["", *NAMESPACES]), st.sampled_from(["", *NODES]), st.none() | TREES)


@dataclass(frozen=True)
class PutEndpoint:
    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    profiles: list[str]


@dataclass(frozen=True)
class DeleteEndpoint:
    namespace: str
    name: str


@dataclass(frozen=True)
class PutProfile:
    name: str
    labels: dict[str, str] | None  # None: deleted


Change = PutEndpoint | DeleteEndpoint | PutProfile

CHANGES: st.SearchStrategy[Change] = st.one_of(
    st.builds(
        PutEndpoint,
        st.sampled_from(NAMESPACES),
        st.sampled_from(NAMES),
        st.sampled_from(NODES),
        LABELS,
        st.lists(st.sampled_from(PROFILES), max_size=3),
    ),
    st.builds(DeleteEndpoint, st.sampled_from(NAMESPACES), st.sampled_from(NAMES)),
    st.builds(PutProfile, st.sampled_from(PROFILES), st.none() | LABELS),
)
# A batch: revisions of one or more changes each, and the gap to the next revision number.
BATCHES = st.lists(st.tuples(st.lists(CHANGES, min_size=1, max_size=4), st.integers(1, 3)), min_size=1, max_size=4)


@dataclass
class Stored:
    node: str
    labels: dict[str, str]
    profiles: list[str]
    resource_version: int


@dataclass
class World:
    """The store's state, in plain Python."""

    endpoints: dict[Key, Stored] = field(default_factory=dict)
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)

    def copy(self) -> World:
        return World(dict(self.endpoints), dict(self.profiles))

    def effective(self, endpoint: Stored) -> dict[str, str]:
        labels = dict(endpoint.labels)
        for profile in endpoint.profiles:
            for key, value in self.profiles.get(profile, {}).items():
                labels.setdefault(key, value)
        return labels

    def matching(self, namespace: str, node: str, tree: Node | None) -> set[Key]:
        return {
            key
            for key, endpoint in self.endpoints.items()
            if (not namespace or key[0] == namespace)
            and (not node or endpoint.node == node)
            and (tree is None or evaluate(tree, self.effective(endpoint)))
        }


@dataclass
class Group:
    namespace: str
    node: str
    tree: Node | None
    refs: int
    created: int  # the revision it was registered at
    view: set[Key]  # what its events have built, from the matches at `created`
    delivered: list[Event]


class FanoutMatchesBruteForce(RuleBasedStateMachine):
    ids = Bundle("groups")

    def __init__(self) -> None:
        super().__init__()
        self.index = EndpointIndex()
        self.world = World()
        self.groups: dict[int, Group] = {}
        self.revision = 0

    @initialize(target=ids, filters=st.lists(FILTERS, min_size=3, max_size=8))
    def start_with_groups(self, filters: list[tuple[str, str, Node | None]]) -> object:
        return multiple(*(self.add_group(f) for f in filters))

    @rule(target=ids, filter=FILTERS)
    def add_group(self, filter: tuple[str, str, Node | None]) -> int:
        namespace, node, tree = filter
        group = self.index.add_group(namespace, node, None if tree is None else Selector(render(tree)))
        if group in self.groups:
            self.groups[group].refs += 1
        else:
            assert group > max(self.groups, default=0), "ids are never reused"
            view = self.world.matching(namespace, node, tree)
            self.groups[group] = Group(namespace, node, tree, 1, self.revision, view, [])
        assert self.index.group_count == len(self.groups)
        return group

    @rule(group=consumes(ids))
    def release_group(self, group: int) -> None:
        self.index.release_group(group)
        self.groups[group].refs -= 1
        if self.groups[group].refs == 0:
            del self.groups[group]
            with pytest.raises(KeyError):
                self.index.replay(group, self.revision, 0)
        assert self.index.group_count == len(self.groups)

    @rule(batch=BATCHES)
    def apply(self, batch: list[tuple[list[Change], int]]) -> None:
        endpoint_changes: list[tuple[int, str, str, str | None, dict[str, str] | None, list[str] | None]] = []
        profile_changes: list[tuple[int, str, dict[str, str] | None]] = []
        expected: dict[int, list[Event]] = {group: [] for group in self.groups}
        for changes, gap in batch:
            self.revision += gap
            before = self.world.copy()
            own: set[Key] = set()
            touched: set[tuple[str, str]] = set()
            for change in changes:
                match change:
                    case PutEndpoint(namespace, name, node, labels, profiles):
                        if (namespace, name) in touched:
                            continue
                        touched.add((namespace, name))
                        own.add((namespace, name))
                        self.world.endpoints[namespace, name] = Stored(node, labels, profiles, self.revision)
                        endpoint_changes.append((self.revision, namespace, name, node, labels, profiles))
                    case DeleteEndpoint(namespace, name):
                        if (namespace, name) in touched:
                            continue
                        touched.add((namespace, name))
                        own.add((namespace, name))
                        self.world.endpoints.pop((namespace, name), None)
                        endpoint_changes.append((self.revision, namespace, name, None, None, None))
                    case PutProfile(name, labels):
                        if ("/profile", name) in touched:
                            continue
                        touched.add(("/profile", name))
                        if labels is None:
                            self.world.profiles.pop(name, None)
                        else:
                            self.world.profiles[name] = labels
                        profile_changes.append((self.revision, name, labels))
            # Brute force: every group, every endpoint, before and after the revision.
            for group, g in self.groups.items():
                was = before.matching(g.namespace, g.node, g.tree)
                now = self.world.matching(g.namespace, g.node, g.tree)
                for key in sorted(was | now):
                    if key not in was:
                        expected[group].append((*key, self.revision, ADDED))
                    elif key not in now:
                        expected[group].append((*key, self.revision, DELETED))
                    elif key in own:
                        expected[group].append((*key, self.revision, MODIFIED))

        subjects, deliveries = self.index.apply(endpoint_changes, profile_changes)

        assert len(set(subjects)) == len(subjects), "each event is one subject"
        assert [s[2] for s in subjects] == sorted(s[2] for s in subjects)
        assert [group for group, _ in deliveries] == sorted(group for group, _ in deliveries)
        got: dict[int, list[Event]] = {group: [] for group in self.groups}
        for group, indices in deliveries:
            assert indices, "only groups with events are listed"
            assert indices == sorted(set(indices))
            got[group] = [subjects[i] for i in indices]
        assert set(got) == set(self.groups), "deliveries only name live groups"
        used = {i for _, indices in deliveries for i in indices}
        assert used == set(range(len(subjects))), "every subject is delivered somewhere"

        for group, g in self.groups.items():
            events = got[group]
            # Within a revision the order is unspecified.
            assert sorted(events, key=lambda e: (e[2], e)) == sorted(expected[group], key=lambda e: (e[2], e))
            for namespace, name, _, kind in events:
                if kind == ADDED:
                    assert (namespace, name) not in g.view
                    g.view.add((namespace, name))
                elif kind == MODIFIED:
                    assert (namespace, name) in g.view
                else:
                    assert kind == DELETED
                    g.view.remove((namespace, name))
            g.delivered += events
        assert self.index.revision == self.revision

    @precondition(lambda self: self.revision > 0)
    @rule(data=st.data())
    def trim_log(self, data: st.DataObject) -> None:
        cut = data.draw(st.integers(self.index.log_start, self.revision))
        self.index.trim_log(cut)
        assert self.index.log_start == cut

    @invariant()
    def views_are_the_matches(self) -> None:
        for g in self.groups.values():
            assert g.view == self.world.matching(g.namespace, g.node, g.tree)

    @invariant()
    def replay_repeats_what_was_delivered(self) -> None:
        start = self.index.log_start
        for group, g in self.groups.items():
            if start > 0:
                assert self.index.replay(group, start - 1, 0) is None
            for after in range(max(start, g.created), self.revision + 1):
                expected = [e for e in g.delivered if e[2] > after]
                assert self.index.replay(group, after, 0) == expected
                assert self.replayed_in_parts(group, after, max_visits=2) == expected
                if len(expected) > 1:  # a limit of 0 means none
                    assert self.index.replay(group, after, len(expected)) == expected
                    assert self.index.replay(group, after, len(expected) - 1) is None

    def replayed_in_parts(self, group: int, after: int, max_visits: int) -> list[Any]:
        """`replay_part` from each revision the part before got through, until the end: the whole replay."""
        events: list[Any] = []
        while True:
            part = self.index.replay_part(group, after, 0, max_visits)
            assert part is not None
            subjects, through = part
            events.extend(subjects)
            if through is None:
                return events
            assert through > after
            after = through

    @invariant()
    def diff_agrees_with_brute_force(self) -> None:
        # Know every endpoint (some with stale versions), one that never existed, and a key without '/'.
        known = {f"{ns}/{name}": e.resource_version + (name == "x") for (ns, name), e in self.world.endpoints.items()}
        known["a/never"] = 1
        known["no-slash"] = 1
        partial = {k: v for i, (k, v) in enumerate(sorted(known.items())) if i % 2 == 0}
        for group, g in self.groups.items():
            matching = self.world.matching(g.namespace, g.node, g.tree)
            for knows in (known, partial, {}):
                added, modified, deleted = self.index.diff(group, knows)
                split = {tuple(k.split("/", 1)) if "/" in k else ("", k): v for k, v in knows.items()}
                assert added == sorted(k for k in matching if k not in split)
                assert modified == sorted(
                    k for k in matching if k in split and split[k] != self.world.endpoints[k].resource_version
                )
                assert deleted == [k for k in split if k not in matching]  # in the order the client sent them


TestFanoutMatchesBruteForce = pytest.mark.slow(FanoutMatchesBruteForce.TestCase)
TestFanoutMatchesBruteForce.settings = settings(
    max_examples=150, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_profile_edit_is_silent_for_endpoints_that_keep_matching() -> None:
    index = EndpointIndex()
    prod = index.add_group("", "", Selector("env == 'prod'"))
    node = index.add_group("", "n1", None)
    index.apply([(1, "ns", "e", "n1", {}, ["kns.ns"])], [(1, "kns.ns", {"env": "prod"})])
    subjects, deliveries = index.apply([], [(2, "kns.ns", {"env": "prod", "team": "x"})])
    assert (subjects, deliveries) == ([], [])
    subjects, deliveries = index.apply([], [(3, "kns.ns", {"env": "dev"})])
    assert subjects == [("ns", "e", 3, DELETED)]
    assert deliveries == [(prod, [0])]
    assert index.replay(node, 1, 0) == []
    assert index.replay(prod, 1, 0) == [("ns", "e", 3, DELETED)]


def test_one_subject_is_shared_by_every_group_that_gets_it() -> None:
    index = EndpointIndex()
    groups = [index.add_group("", "n1", None), index.add_group("ns", "", None), index.add_group("", "", None)]
    subjects, deliveries = index.apply([(7, "ns", "e", "n1", {"app": "web"}, None)], [])
    assert subjects == [("ns", "e", 7, ADDED)]
    assert deliveries == [(group, [0]) for group in groups]
    assert index.resource_version("ns", "e") == 7


def test_bad_batches_change_nothing() -> None:
    index = EndpointIndex()
    index.reset_log(5)
    with pytest.raises(ValueError, match="out of order"):
        index.apply([(5, "ns", "e", "n", {}, [])], [])
    with pytest.raises(ValueError, match="out of order"):
        index.apply([(7, "ns", "e", "n", {}, []), (6, "ns", "f", "n", {}, [])], [])
    with pytest.raises(TypeError):
        index.apply([(6, "ns", "e", "n", {"a": 1}, [])], [])  # type: ignore[dict-item]
    assert len(index) == 0
    assert index.revision == 5
    with pytest.raises(KeyError):
        index.release_group(1)
    with pytest.raises(KeyError):
        index.diff(1, {})
