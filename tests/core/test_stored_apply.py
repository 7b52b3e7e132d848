"""`EndpointIndex.apply_stored` against the path it replaces, byte for byte.

The old path: `apply` with decoded fields plans subjects and deliveries, and the watch hub
encodes each subject in Python from the objects' states (`epsync.sync.history`,
`epsync.sync.wire`). On random snapshots and batches (creates, updates that change labels,
node or profiles, deletes, profile edits, several revisions per batch) and random groups,
`load_stored` + `apply_stored` must hand back the same chunks with the same bytes, each
distinct event one shared bytes object (in any order within a revision).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync._core import DELETED, EndpointIndex, Selector
from epsync.sync.history import ObjectHistory, State
from epsync.sync.wire import EventType, event_entry, object_with_version
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointSpec

Key = tuple[str, str]
Endpoint = tuple[str, dict[str, str], list[str]]  # node, own labels, profiles
Chunks = list[tuple[int, list[tuple[int, list[bytes]]]]]

NAMESPACES = ["a", "b"]
KEYS = [(ns, name) for ns in NAMESPACES for name in ["x", "y", "z"]]
NODES = ["n1", "n2"]
PROFILES = ["kns.a", "p", "q"]
LABELS = st.dictionaries(st.sampled_from(["app", "env", "tier"]), st.sampled_from(["1", "2"]), max_size=3)
SELECTORS = [None, "has(app)", "app == '1'", "env != '2'", "!has(tier)", "app in {'1'} && env == '2'", "all()"]
FILTERS = st.tuples(st.sampled_from(["", *NAMESPACES]), st.sampled_from(["", *NODES]), st.sampled_from(SELECTORS))
ENDPOINTS: st.SearchStrategy[Endpoint] = st.tuples(
    st.sampled_from(NODES), LABELS, st.lists(st.sampled_from(PROFILES), max_size=2, unique=True)
)
# One revision: endpoint and profile changes on distinct objects (None: delete).
REVISIONS = st.tuples(
    st.dictionaries(st.sampled_from(KEYS), st.none() | ENDPOINTS, max_size=3),
    st.dictionaries(st.sampled_from(PROFILES), st.none() | LABELS, max_size=2),
)
BATCHES = st.lists(st.lists(REVISIONS, min_size=1, max_size=4), min_size=1, max_size=4)


def endpoint_bytes(key: Key, value: Endpoint) -> bytes:
    node, labels, profiles = value
    return WorkloadEndpoint(
        metadata=ObjectMeta(namespace=key[0], name=key[1], labels=labels, uid="u-" + key[1]),
        spec=WorkloadEndpointSpec(node=node, profiles=profiles, workload="w", ip_networks=["10.0.0.1/32"]),
    ).SerializeToString(deterministic=True)


def profile_bytes(name: str, labels: dict[str, str]) -> bytes:
    return Profile(metadata=ObjectMeta(name=name), spec=ProfileSpec(labels_to_apply=labels)).SerializeToString(
        deterministic=True
    )


@dataclass
class OldPath:
    """The index fed decoded fields, and the Python encoding from the objects' states."""

    index: EndpointIndex = field(default_factory=EndpointIndex)
    current: dict[Key, tuple[int, bytes]] = field(default_factory=dict)
    history: ObjectHistory = field(default_factory=ObjectHistory)

    def state_at(self, key: Key, revision: int) -> tuple[int, bytes]:
        state: State = (
            self.history.state_at(f"{key[0]}/{key[1]}", revision)
            if self.history.tracks(f"{key[0]}/{key[1]}")
            else self.current[key]
        )
        assert state[1] is not None
        return state[0], state[1]

    def entry(self, subject: tuple[str, str, int, int]) -> bytes:
        namespace, name, revision, event_type = subject
        if event_type == DELETED:
            _, stored = self.state_at((namespace, name), revision - 1)
            return event_entry(EventType.ValueType(DELETED), object_with_version(stored, revision), revision)
        version, stored = self.state_at((namespace, name), revision)
        return event_entry(EventType.ValueType(event_type), object_with_version(stored, version), revision)

    def apply(
        self,
        endpoints: list[tuple[int, Key, bytes | None, Endpoint | None]],
        profiles: list[tuple[int, str, dict[str, str] | None]],
    ) -> Chunks:
        changes: list[tuple[int, str, str, str | None, dict[str, str] | None, list[str] | None]] = []
        for revision, key, value, fields in endpoints:
            old = self.current.get(key)
            self.history.record(f"{key[0]}/{key[1]}", revision, value, (0, None) if old is None else old)
            if value is None or fields is None:
                self.current.pop(key, None)
                changes.append((revision, key[0], key[1], None, None, None))
            else:
                self.current[key] = (revision, value)
                changes.append((revision, key[0], key[1], fields[0], fields[1], fields[2]))
        subjects, deliveries = self.index.apply(changes, profiles)
        encoded = [self.entry(subject) for subject in subjects]
        result: Chunks = []
        for group, indices in deliveries:
            chunks: list[tuple[int, list[bytes]]] = []
            for index in indices:
                revision = subjects[index][2]
                if chunks and chunks[-1][0] == revision:
                    chunks[-1][1].append(encoded[index])
                else:
                    chunks.append((revision, [encoded[index]]))
            result.append((group, chunks))
        return result


def normalized(deliveries: Chunks) -> Chunks:
    return [(group, [(revision, sorted(chunk)) for revision, chunk in chunks]) for group, chunks in deliveries]


def run(
    snapshot: dict[Key, Endpoint],
    snapshot_profiles: dict[str, dict[str, str]],
    filters: list[tuple[str, str, str | None]],
    batches: list[list[tuple[dict[Key, Endpoint | None], dict[str, dict[str, str] | None]]]],
) -> None:
    old, new = OldPath(), EndpointIndex()
    stored = {key: endpoint_bytes(key, value) for key, value in snapshot.items()}
    old.index.upsert_profiles(list(snapshot_profiles.items()))
    old.index.upsert_endpoints([(*key, *value, 1) for key, value in snapshot.items()])
    old.current = {key: (1, value) for key, value in stored.items()}
    new.load_stored(
        [(*key, 1, value) for key, value in stored.items()],
        [(name, profile_bytes(name, labels)) for name, labels in snapshot_profiles.items()],
    )
    for index in (old.index, new):
        index.reset_log(1)
        for namespace, node, text in filters:
            index.add_group(namespace, node, None if text is None else Selector(text))
    revision = 1
    for batch in batches:
        old_endpoints: list[tuple[int, Key, bytes | None, Endpoint | None]] = []
        old_profiles: list[tuple[int, str, dict[str, str] | None]] = []
        new_endpoints: list[tuple[int, str, str, bytes | None, bytes | None, int]] = []
        new_profiles: list[tuple[int, str, bytes | None]] = []
        current = dict(old.current)
        for endpoint_changes, profile_changes in batch:
            revision += 1
            for key, value in endpoint_changes.items():
                if value is None and key not in current:
                    continue  # a store deletes only what exists
                encoded = None if value is None else endpoint_bytes(key, value)
                previous_version, previous = current.get(key, (0, None))
                new_endpoints.append((revision, *key, encoded, previous, previous_version))
                old_endpoints.append((revision, key, encoded, value))
                if encoded is None:
                    del current[key]
                else:
                    current[key] = (revision, encoded)
            for name, labels in profile_changes.items():
                new_profiles.append((revision, name, None if labels is None else profile_bytes(name, labels)))
                old_profiles.append((revision, name, labels))
        expected = old.apply(old_endpoints, old_profiles)
        delivered, count = new.apply_stored(new_endpoints, new_profiles)
        # Order within a revision is unspecified (SPEC §6.1), and the two indices order their sets apart.
        assert normalized(delivered) == normalized(expected)
        entries = [entry for _, chunks in delivered for _, chunk in chunks for entry in chunk]
        # Each distinct event is one object, shared by every group that gets it.
        assert len({id(entry) for entry in entries}) == count == len(set(entries))
        assert new.revision == old.index.revision


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.dictionaries(st.sampled_from(KEYS), ENDPOINTS, max_size=4),
    snapshot_profiles=st.dictionaries(st.sampled_from(PROFILES), LABELS, max_size=3),
    filters=st.lists(FILTERS, min_size=1, max_size=5),
    batches=BATCHES,
)
def test_stored_apply_sends_what_the_python_encoding_sent(
    snapshot: dict[Key, Endpoint],
    snapshot_profiles: dict[str, dict[str, str]],
    filters: list[tuple[str, str, str | None]],
    batches: list[list[tuple[dict[Key, Endpoint | None], dict[str, dict[str, str] | None]]]],
) -> None:
    run(snapshot, snapshot_profiles, filters, batches)


def test_a_profile_edit_deletes_an_unchanged_endpoint_with_its_current_state() -> None:
    run(
        {("a", "x"): ("n1", {}, ["p"])},
        {"p": {"app": "1"}},
        [("", "", "app == '1'"), ("", "", "app == '2'")],
        [[({}, {"p": {"app": "2"}})]],
    )


def test_several_revisions_of_one_endpoint_in_one_batch() -> None:
    run(
        {},
        {},
        [("", "", "app == '1'"), ("", "n2", None)],
        [
            [
                ({("a", "x"): ("n1", {}, ["p"])}, {}),
                ({}, {"p": {"app": "1"}}),
                ({("a", "x"): ("n2", {"env": "1"}, ["p"])}, {}),
                ({}, {"p": None}),
                ({("a", "x"): None}, {"p": {"app": "1"}}),
            ]
        ],
    )


def test_undecodable_bytes_are_a_value_error_and_change_nothing() -> None:
    index = EndpointIndex()
    good = endpoint_bytes(("a", "x"), ("n1", {}, []))
    with pytest.raises(ValueError, match=r"a/y at revision 2 is not an encoded epsync.v1.WorkloadEndpoint"):
        index.apply_stored([(1, "a", "x", good, None, 0), (2, "a", "y", b"\x0a\x05ab", None, 0)], [])
    with pytest.raises(ValueError, match="Profile"):
        index.load_stored([], [("p", b"\x12\x09")])
    assert len(index) == 0
    assert index.revision == 0


def test_an_endpoint_written_without_bytes_has_no_state_for_profile_events() -> None:
    index = EndpointIndex()
    index.upsert_endpoints([("a", "x", "n1", {}, ["p"], 1)])
    index.add_group("", "", Selector("has(app)"))
    with pytest.raises(RuntimeError, match="no stored state of a/x"):
        index.apply_stored([], [(2, "p", profile_bytes("p", {"app": "1"}))])
