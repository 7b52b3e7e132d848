"""Write semantics of every datastore: preconditions, results, revisions."""

from __future__ import annotations

import pytest

from epsync.store.base import (
    Committed,
    Conflict,
    Datastore,
    DatastoreUnavailable,
    Delete,
    Put,
    Record,
    Write,
)
from tests.store.conftest import EP, PR, Backend, committed, put


async def test_new_store_is_empty_at_its_open_revision(store: Datastore, backend: Backend) -> None:
    start = store.current_revision
    assert store.oldest_revision == start
    if backend.embedded:
        assert start == 0
    snapshot = await store.snapshot()
    assert (snapshot.revision, snapshot.records) == (start, [])
    assert await store.get(EP, "ns/a") is None


async def test_unconditional_put_creates_then_replaces(store: Datastore) -> None:
    start = store.current_revision
    first = await put(store, "ns/a", b"one")
    r1 = first.revision
    assert r1 > start
    assert first == Committed(r1, Record(EP, "ns/a", b"one", r1, r1), None)
    second = await put(store, "ns/a", b"two")
    r2 = second.revision
    assert r2 > r1
    assert second == Committed(r2, Record(EP, "ns/a", b"two", r1, r2), Record(EP, "ns/a", b"one", r1, r1))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"two", r1, r2)
    assert store.current_revision == r2


async def test_put_expecting_zero_creates_only_when_absent(store: Datastore) -> None:
    (created,) = await store.write([Put(EP, "ns/a", b"one", expected_mod_revision=0)])
    r1 = committed(created).revision
    assert committed(created).record == Record(EP, "ns/a", b"one", r1, r1)
    (again,) = await store.write([Put(EP, "ns/a", b"two", expected_mod_revision=0)])
    assert again == Conflict(Record(EP, "ns/a", b"one", r1, r1))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"one", r1, r1)


async def test_put_expecting_a_mod_revision_swaps_only_on_match(store: Datastore) -> None:
    r1 = (await put(store, "ns/a", b"one")).revision
    (stale,) = await store.write([Put(EP, "ns/a", b"x", expected_mod_revision=r1 + 1000)])
    assert stale == Conflict(Record(EP, "ns/a", b"one", r1, r1))
    (swapped,) = await store.write([Put(EP, "ns/a", b"two", expected_mod_revision=r1)])
    r2 = committed(swapped).revision
    assert committed(swapped).record == Record(EP, "ns/a", b"two", r1, r2)
    (old,) = await store.write([Put(EP, "ns/a", b"three", expected_mod_revision=r1)])
    assert old == Conflict(Record(EP, "ns/a", b"two", r1, r2))


async def test_put_expecting_a_mod_revision_conflicts_when_absent(store: Datastore) -> None:
    (result,) = await store.write([Put(EP, "ns/missing", b"x", expected_mod_revision=3)])
    assert result == Conflict(None)
    assert await store.get(EP, "ns/missing") is None


async def test_unconditional_delete_requires_the_key_to_exist(store: Datastore) -> None:
    (missing,) = await store.write([Delete(EP, "ns/a")])
    assert missing == Conflict(None)
    r1 = (await put(store, "ns/a", b"one")).revision
    (deleted,) = await store.write([Delete(EP, "ns/a")])
    assert deleted == Committed(committed(deleted).revision, None, Record(EP, "ns/a", b"one", r1, r1))
    assert committed(deleted).revision > r1
    assert await store.get(EP, "ns/a") is None


async def test_delete_expecting_a_mod_revision_deletes_only_on_match(store: Datastore) -> None:
    r1 = (await put(store, "ns/a", b"one")).revision
    r2 = (await put(store, "ns/a", b"two")).revision
    (stale,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=r1)])
    assert stale == Conflict(Record(EP, "ns/a", b"two", r1, r2))
    (deleted,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=r2)])
    assert committed(deleted).revision > r2
    (gone,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=r2)])
    assert gone == Conflict(None)


async def test_conflicts_consume_no_revision(store: Datastore) -> None:
    r1 = (await put(store, "ns/a")).revision
    results = await store.write([Put(EP, "ns/a", b"x", expected_mod_revision=0), Delete(EP, "ns/b")])
    assert all(isinstance(r, Conflict) for r in results)
    assert store.current_revision == r1
    assert (await put(store, "ns/c")).revision > r1


async def test_writes_in_one_call_are_judged_in_order_and_see_each_other(store: Datastore) -> None:
    # Nothing else writes meanwhile, so the next revision is predictable on every backend.
    n = store.current_revision
    results = await store.write(
        [
            Put(EP, "ns/a", b"one", expected_mod_revision=0),
            Put(EP, "ns/a", b"two", expected_mod_revision=n + 1),
            Put(EP, "ns/a", b"stale", expected_mod_revision=n + 1),
            Delete(EP, "ns/a", expected_mod_revision=n + 2),
            Delete(EP, "ns/a"),
            Put(EP, "ns/a", b"again", expected_mod_revision=0),
        ]
    )
    assert [type(r) for r in results] == [Committed, Committed, Conflict, Committed, Conflict, Committed]
    assert [r.revision for r in results if isinstance(r, Committed)] == [n + 1, n + 2, n + 3, n + 4]
    assert results[2] == Conflict(Record(EP, "ns/a", b"two", n + 1, n + 2))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"again", n + 4, n + 4)


async def test_writes_to_other_keys_keep_their_order_of_revisions(store: Datastore) -> None:
    writes: list[Write] = [Put(EP, f"ns/k{i % 5}", str(i).encode()) for i in range(20)]
    results = await store.write([*writes, Delete(EP, "ns/k0"), Delete(PR, "missing")])
    revisions = [committed(r).revision for r in results[:-1]]
    assert revisions == sorted(revisions)
    per_key: dict[str, list[int]] = {}
    for write, revision in zip(writes, revisions, strict=False):
        per_key.setdefault(write.key, []).append(revision)
    assert all(len(set(r)) == len(r) for r in per_key.values()), "one key never changes twice in one revision"
    assert results[-1] == Conflict(None)
    assert (await store.snapshot()).revision == revisions[-1] == store.current_revision


async def test_recreating_a_deleted_key_starts_a_new_create_revision(store: Datastore) -> None:
    await put(store, "ns/a")
    await store.write([Delete(EP, "ns/a")])
    recreated = await put(store, "ns/a", b"new")
    assert recreated.previous is None
    r = recreated.revision
    assert recreated.record == Record(EP, "ns/a", b"new", r, r)


async def test_one_revision_counter_is_shared_by_all_kinds_but_keys_are_per_kind(store: Datastore) -> None:
    a = await put(store, "same", b"endpoint", kind=EP)
    b = await put(store, "same", b"profile", kind=PR)
    c = await put(store, "same", b"endpoint-2", kind=EP)
    assert a.revision < b.revision < c.revision
    assert await store.get(PR, "same") == Record(PR, "same", b"profile", b.revision, b.revision)
    assert await store.get(EP, "same") == Record(EP, "same", b"endpoint-2", a.revision, c.revision)


async def test_values_are_opaque_bytes(store: Datastore) -> None:
    value = bytes(range(256)) * 64 + b"\x00"
    await put(store, "ns/bin", value)
    record = await store.get(EP, "ns/bin")
    assert record is not None
    assert record.value == value
    assert type(record.value) is bytes


async def test_snapshot_lists_every_kind_in_kind_then_key_order(store: Datastore) -> None:
    for kind, key in [(EP, "ns/b"), (PR, "z"), (EP, "a/z"), (PR, "a"), (EP, "ns/a"), (EP, "ns/a-b"), (PR, "a.b")]:
        last = await put(store, key, kind=kind)
    snapshot = await store.snapshot()
    assert snapshot.revision == last.revision == store.current_revision
    assert [(r.kind, r.key) for r in snapshot.records] == sorted((r.kind, r.key) for r in snapshot.records)
    assert len(snapshot.records) == 7


async def test_an_empty_write_returns_no_results(store: Datastore) -> None:
    start = store.current_revision
    assert await store.write([]) == []
    assert store.current_revision == start


@pytest.mark.parametrize(
    ("write", "error"),
    [
        (Put(EP, "ns/a", "text"), TypeError),  # type: ignore[arg-type]
        (Put(EP, "", b"v"), ValueError),
        (Put("workloadendpoints", "ns/a", b"v"), TypeError),  # type: ignore[arg-type]
        (Put(EP, "ns/a", b"v", expected_mod_revision=-1), ValueError),
        (Delete(EP, "ns/a", expected_mod_revision=0), ValueError),
        ("ns/a", TypeError),
    ],
)
async def test_malformed_writes_are_rejected_before_anything_is_written(
    store: Datastore, write: Write, error: type[Exception]
) -> None:
    start = store.current_revision
    with pytest.raises(error):
        await store.write([Put(EP, "ns/ok", b"v"), write])
    assert store.current_revision == start
    assert await store.get(EP, "ns/ok") is None


async def test_writes_after_close_are_unavailable(backend: Backend, location: str) -> None:
    store = backend.make(location)
    await store.open()
    await store.close()
    with pytest.raises(DatastoreUnavailable):
        await store.write([Put(EP, "ns/a", b"v")])
    await store.close()  # closing twice is harmless
