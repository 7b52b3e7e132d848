"""`EndpointIndex.initial_entries` and `difference_entries` against the Python encoding they replace.

The old path: the endpoint hub took the keys from `query` (initial events) or `diff` (known
versions) and encoded each event in Python (`epsync.sync.wire`): ADDED and MODIFIED with the
endpoint as the cache holds it now, DELETED with only the known key's metadata, all stamped with
the snapshot's revision S. On random states (a loaded snapshot, then a batch applied as stored),
random groups and random known versions, the index must hand back the same entries in the same
order, and an ADDED entry at S must be one bytes object for every call at S.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync._core import EndpointIndex, Selector
from epsync.sync.wire import ADDED, DELETED, MODIFIED, EventType, event_entry, object_with_version
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.core.test_stored_apply import ENDPOINTS, FILTERS, KEYS, Endpoint, Key, endpoint_bytes

# Known keys: every endpoint key, one that never exists, and keys that do not split as "namespace/name".
KNOWN_KEYS = [f"{ns}/{name}" for ns, name in KEYS] + ["a/q", "plain", "/x", "a/b/c"]
KNOWN = st.dictionaries(st.sampled_from(KNOWN_KEYS), st.integers(1, 4), max_size=6)
Flt = tuple[str, str, str | None]  # namespace, node, selector


def old_entry(event_type: EventType.ValueType, state: tuple[int, bytes], revision: int) -> bytes:
    version, stored = state
    return event_entry(event_type, object_with_version(stored, version), revision)


def old_initial(index: EndpointIndex, current: dict[Key, tuple[int, bytes]], flt: Flt, revision: int) -> list[bytes]:
    namespace, node, text = flt
    keys = index.query(namespace, node, None if text is None else Selector(text), None, 0)
    return [old_entry(ADDED, current[key], revision) for key in keys]


def old_difference(
    index: EndpointIndex, current: dict[Key, tuple[int, bytes]], group: int, known: dict[str, int], revision: int
) -> list[bytes]:
    added, modified, deleted = index.diff(group, known)
    entries = [old_entry(ADDED, current[key], revision) for key in added]
    entries += [old_entry(MODIFIED, current[key], revision) for key in modified]
    for namespace, name in deleted:
        gone = WorkloadEndpoint(metadata=ObjectMeta(namespace=namespace, name=name, resource_version=revision))
        entries.append(event_entry(DELETED, gone.SerializeToString(), revision))
    return entries


def run(
    snapshot: dict[Key, tuple[Endpoint, int]],
    batch: dict[Key, Endpoint | None],
    filters: list[Flt],
    knowns: list[dict[str, int]],
) -> None:
    index = EndpointIndex()
    current = {key: (version, endpoint_bytes(key, value)) for key, (value, version) in snapshot.items()}
    index.load_stored([(*key, version, stored) for key, (version, stored) in current.items()], [])
    revision = 10
    index.reset_log(revision)
    groups = [index.add_group(ns, node, None if text is None else Selector(text)) for ns, node, text in filters]
    # One more revision applied as stored: the index's bytes must follow it.
    changes: list[tuple[int, str, str, bytes | None, bytes | None, int]] = []
    revision += 1
    for key, value in batch.items():
        if value is None and key not in current:
            continue
        previous_version, previous = current.get(key, (0, None))
        encoded = None if value is None else endpoint_bytes(key, value)
        changes.append((revision, *key, encoded, previous, previous_version))
        if encoded is None:
            del current[key]
        else:
            current[key] = (revision, encoded)
    index.apply_stored(changes, [])

    by_key: dict[bytes, bytes] = {}  # every ADDED entry handed out at this revision, by its bytes
    for flt, group in zip(filters, groups, strict=True):
        entries, fresh = index.initial_entries(group, revision)
        assert entries == old_initial(index, current, flt, revision)
        assert fresh == sum(1 for entry in entries if entry not in by_key)
        for entry in entries:
            # One object per ADDED entry at this revision, whichever group and call it comes in.
            assert by_key.setdefault(entry, entry) is entry
        again, fresh = index.initial_entries(group, revision)
        assert fresh == 0
        assert all(a is b for a, b in zip(again, entries, strict=True))
        for known in knowns:
            entries, fresh = index.difference_entries(group, known, revision)
            assert entries == old_difference(index, current, group, known, revision)
            added = len(index.diff(group, known)[0])
            assert fresh == len(entries) - added
            for entry in entries[:added]:
                assert by_key[entry] is entry


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=st.dictionaries(st.sampled_from(KEYS), st.tuples(ENDPOINTS, st.integers(1, 4)), max_size=5),
    batch=st.dictionaries(st.sampled_from(KEYS), st.none() | ENDPOINTS, max_size=3),
    filters=st.lists(FILTERS, min_size=1, max_size=4),
    knowns=st.lists(KNOWN, max_size=3),
)
def test_catch_up_entries_are_what_the_python_encoding_sent(
    snapshot: dict[Key, tuple[Endpoint, int]],
    batch: dict[Key, Endpoint | None],
    filters: list[Flt],
    knowns: list[dict[str, int]],
) -> None:
    run(snapshot, batch, filters, knowns)


def test_added_entries_are_encoded_again_at_another_revision() -> None:
    index = EndpointIndex()
    stored = endpoint_bytes(("a", "x"), ("n1", {}, []))
    index.load_stored([("a", "x", 3, stored)], [])
    group = index.add_group("", "", None)
    (first,), encoded = index.initial_entries(group, 5)
    assert encoded == 1
    (later,), encoded = index.initial_entries(group, 6)
    assert encoded == 1
    assert later == old_entry(ADDED, (3, stored), 6)
    (again,), encoded = index.initial_entries(group, 5)
    assert (encoded, again) == (1, first)
    assert again is not first  # dropped when the revision moved


def test_an_endpoint_without_stored_bytes_is_an_error() -> None:
    index = EndpointIndex()
    index.upsert_endpoints([("a", "x", "n1", {}, [], 3)])
    group = index.add_group("", "", None)
    with pytest.raises(RuntimeError):
        index.initial_entries(group, 5)
    with pytest.raises(KeyError):
        index.difference_entries(group + 1, {}, 5)
