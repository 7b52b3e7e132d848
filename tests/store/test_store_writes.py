"""Write semantics of the SQLite datastore: preconditions, results, revisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from epsync.store.base import (
    Committed,
    Conflict,
    DatastoreUnavailable,
    Delete,
    Put,
    Record,
    Write,
)
from epsync.store.sqlite import SqliteDatastore
from tests.store.conftest import EP, PR, committed, put


async def test_new_store_starts_at_revision_zero_and_empty(store: SqliteDatastore) -> None:
    assert store.current_revision == 0
    assert store.oldest_revision == 0
    snapshot = await store.snapshot()
    assert (snapshot.revision, snapshot.records) == (0, [])
    assert await store.get(EP, "ns/a") is None


async def test_unconditional_put_creates_then_replaces(store: SqliteDatastore) -> None:
    first = await put(store, "ns/a", b"one")
    assert first == Committed(1, Record(EP, "ns/a", b"one", 1, 1), None)
    second = await put(store, "ns/a", b"two")
    assert second == Committed(2, Record(EP, "ns/a", b"two", 1, 2), Record(EP, "ns/a", b"one", 1, 1))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"two", 1, 2)
    assert store.current_revision == 2


async def test_put_expecting_zero_creates_only_when_absent(store: SqliteDatastore) -> None:
    (created,) = await store.write([Put(EP, "ns/a", b"one", expected_mod_revision=0)])
    assert committed(created).record == Record(EP, "ns/a", b"one", 1, 1)
    (again,) = await store.write([Put(EP, "ns/a", b"two", expected_mod_revision=0)])
    assert again == Conflict(Record(EP, "ns/a", b"one", 1, 1))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"one", 1, 1)


async def test_put_expecting_a_mod_revision_swaps_only_on_match(store: SqliteDatastore) -> None:
    await put(store, "ns/a", b"one")  # revision 1
    (stale,) = await store.write([Put(EP, "ns/a", b"x", expected_mod_revision=7)])
    assert stale == Conflict(Record(EP, "ns/a", b"one", 1, 1))
    (swapped,) = await store.write([Put(EP, "ns/a", b"two", expected_mod_revision=1)])
    assert committed(swapped).record == Record(EP, "ns/a", b"two", 1, 2)
    (old,) = await store.write([Put(EP, "ns/a", b"three", expected_mod_revision=1)])
    assert old == Conflict(Record(EP, "ns/a", b"two", 1, 2))


async def test_put_expecting_a_mod_revision_conflicts_when_absent(store: SqliteDatastore) -> None:
    (result,) = await store.write([Put(EP, "ns/missing", b"x", expected_mod_revision=3)])
    assert result == Conflict(None)
    assert await store.get(EP, "ns/missing") is None


async def test_unconditional_delete_requires_the_key_to_exist(store: SqliteDatastore) -> None:
    (missing,) = await store.write([Delete(EP, "ns/a")])
    assert missing == Conflict(None)
    await put(store, "ns/a", b"one")
    (deleted,) = await store.write([Delete(EP, "ns/a")])
    assert deleted == Committed(2, None, Record(EP, "ns/a", b"one", 1, 1))
    assert await store.get(EP, "ns/a") is None


async def test_delete_expecting_a_mod_revision_deletes_only_on_match(store: SqliteDatastore) -> None:
    await put(store, "ns/a", b"one")
    await put(store, "ns/a", b"two")
    (stale,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=1)])
    assert stale == Conflict(Record(EP, "ns/a", b"two", 1, 2))
    (deleted,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=2)])
    assert committed(deleted).revision == 3
    (gone,) = await store.write([Delete(EP, "ns/a", expected_mod_revision=2)])
    assert gone == Conflict(None)


async def test_conflicts_consume_no_revision(store: SqliteDatastore) -> None:
    await put(store, "ns/a")
    results = await store.write([Put(EP, "ns/a", b"x", expected_mod_revision=0), Delete(EP, "ns/b")])
    assert all(isinstance(r, Conflict) for r in results)
    assert store.current_revision == 1
    assert (await put(store, "ns/c")).revision == 2


async def test_writes_in_one_call_are_judged_in_order_and_see_each_other(store: SqliteDatastore) -> None:
    results = await store.write(
        [
            Put(EP, "ns/a", b"one", expected_mod_revision=0),
            Put(EP, "ns/a", b"two", expected_mod_revision=1),
            Put(EP, "ns/a", b"stale", expected_mod_revision=1),
            Delete(EP, "ns/a", expected_mod_revision=2),
            Delete(EP, "ns/a"),
            Put(EP, "ns/a", b"again", expected_mod_revision=0),
        ]
    )
    assert [type(r) for r in results] == [Committed, Committed, Conflict, Committed, Conflict, Committed]
    assert [r.revision for r in results if isinstance(r, Committed)] == [1, 2, 3, 4]
    assert results[2] == Conflict(Record(EP, "ns/a", b"two", 1, 2))
    assert await store.get(EP, "ns/a") == Record(EP, "ns/a", b"again", 4, 4)


async def test_recreating_a_deleted_key_starts_a_new_create_revision(store: SqliteDatastore) -> None:
    await put(store, "ns/a")
    await store.write([Delete(EP, "ns/a")])
    recreated = await put(store, "ns/a", b"new")
    assert recreated.previous is None
    assert recreated.record == Record(EP, "ns/a", b"new", 3, 3)


async def test_one_revision_counter_is_shared_by_all_kinds_but_keys_are_per_kind(store: SqliteDatastore) -> None:
    a = await put(store, "same", b"endpoint", kind=EP)
    b = await put(store, "same", b"profile", kind=PR)
    c = await put(store, "same", b"endpoint-2", kind=EP)
    assert [a.revision, b.revision, c.revision] == [1, 2, 3]
    assert await store.get(PR, "same") == Record(PR, "same", b"profile", 2, 2)
    assert await store.get(EP, "same") == Record(EP, "same", b"endpoint-2", 1, 3)


async def test_values_are_opaque_bytes(store: SqliteDatastore) -> None:
    value = bytes(range(256)) * 64 + b"\x00"
    await put(store, "ns/bin", value)
    record = await store.get(EP, "ns/bin")
    assert record is not None
    assert record.value == value
    assert type(record.value) is bytes


async def test_snapshot_lists_every_kind_in_kind_then_key_order(store: SqliteDatastore) -> None:
    for kind, key in [(EP, "ns/b"), (PR, "z"), (EP, "a/z"), (PR, "a"), (EP, "ns/a")]:
        await put(store, key, kind=kind)
    snapshot = await store.snapshot()
    assert snapshot.revision == 5
    assert [(r.kind, r.key) for r in snapshot.records] == sorted((r.kind, r.key) for r in snapshot.records)
    assert len(snapshot.records) == 5


async def test_an_empty_write_returns_no_results(store: SqliteDatastore) -> None:
    assert await store.write([]) == []
    assert store.current_revision == 0


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
    store: SqliteDatastore, write: Write, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await store.write([Put(EP, "ns/ok", b"v"), write])
    assert store.current_revision == 0
    assert await store.get(EP, "ns/ok") is None


async def test_writes_after_close_are_unavailable(db_path: Path) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    await store.close()
    with pytest.raises(DatastoreUnavailable):
        await store.write([Put(EP, "ns/a", b"v")])
    await store.close()  # closing twice is harmless
