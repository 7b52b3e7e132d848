"""Group commit: concurrent writes share transactions, and failures stay confined to what failed."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from epsync.store.base import (
    Committed,
    DatastoreUnavailable,
    Delete,
    Put,
    Record,
    WriteFailed,
)
from epsync.store.sqlite import SqliteDatastore
from epsync.store.sqlite.apply import select_keys
from tests.store.conftest import EP, Recorder, WriterFaults, committed, put


def install_poison_trigger(db_path: Path) -> None:
    """Make SQLite itself fail any insert of the key 'ns/poison' (a realistic mid-transaction error)."""
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON objects WHEN NEW.key = 'ns/poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned key'); END"
        )
    conn.close()


async def test_concurrent_writers_share_few_groups_and_each_get_a_distinct_revision(
    sqlite_store: SqliteDatastore,
) -> None:
    results = await asyncio.gather(*(sqlite_store.write([Put(EP, f"ns/k{i}", b"v")]) for i in range(500)))
    revisions = [committed(r).revision for (r,) in results]
    assert sorted(revisions) == list(range(1, 501))
    assert revisions == sorted(revisions), "calls commit in the order they were made"
    assert sqlite_store.writes_committed == 500
    assert sqlite_store.groups_committed <= 25
    assert sqlite_store.current_revision == 500


async def test_a_group_never_exceeds_max_group_writes(db_path: Path) -> None:
    store = SqliteDatastore(db_path, max_group=10)
    await store.open()
    groups = Recorder()  # one batch per group commit
    store.add_listener(groups)
    try:
        await asyncio.gather(*(store.write([Put(EP, f"ns/k{i}", b"v")]) for i in range(95)))
        assert store.groups_committed >= 10
        assert max(len(batch) for batch in groups.batches) == 10
        (big,) = await asyncio.gather(store.write([Put(EP, f"ns/big{i}", b"v") for i in range(25)]))
        assert len(groups.batches[-1]) == 25, "a call larger than max_group is never split, it goes alone"
        assert len(big) == 25
    finally:
        await store.close()


async def test_one_failing_write_rolls_back_alone_and_the_rest_of_the_group_commits(db_path: Path) -> None:
    with_open = SqliteDatastore(db_path)  # lays down the schema
    await with_open.open()
    await with_open.close()
    install_poison_trigger(db_path)
    store = SqliteDatastore(db_path)
    await store.open()
    recorder = Recorder()
    store.add_listener(recorder)
    try:
        mixed, alone, fine = await asyncio.gather(
            store.write([Put(EP, "ns/a", b"a"), Put(EP, "ns/poison", b"x"), Put(EP, "ns/b", b"b")]),
            store.write([Put(EP, "ns/poison", b"y")]),
            store.write([Put(EP, "ns/c", b"c")]),
            return_exceptions=True,
        )
        assert isinstance(mixed, WriteFailed)
        assert mixed.outcomes[0] == Committed(1, Record(EP, "ns/a", b"a", 1, 1), None)
        assert isinstance(mixed.outcomes[1], sqlite3.IntegrityError)
        assert "poisoned key" in str(mixed.outcomes[1])
        assert mixed.outcomes[2] == Committed(2, Record(EP, "ns/b", b"b", 2, 2), None)
        assert mixed.__cause__ is mixed.outcomes[1]
        assert isinstance(alone, WriteFailed)
        assert isinstance(fine, list)
        assert committed(fine[0]).revision == 3
        assert store.groups_committed == 1
        assert [c.key for c in recorder.changes] == ["ns/a", "ns/b", "ns/c"]
        assert [c.revision for c in recorder.changes] == [1, 2, 3]
        assert await store.get(EP, "ns/poison") is None
        history = await store.changes_since(0)
        assert [c.key for c in history] == ["ns/a", "ns/b", "ns/c"]
    finally:
        await store.close()


async def test_a_failed_commit_fails_every_write_of_the_group_and_publishes_nothing(
    faulty_store: SqliteDatastore, writer_faults: WriterFaults
) -> None:
    await put(faulty_store, "ns/before")
    recorder = Recorder()
    faulty_store.add_listener(recorder)

    def failing_commit(sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return run()

    writer_faults.on_statement = failing_commit
    outcomes = await asyncio.gather(
        faulty_store.write([Put(EP, "ns/a", b"a")]),
        faulty_store.write([Delete(EP, "ns/before")]),
        return_exceptions=True,
    )
    assert all(isinstance(o, DatastoreUnavailable) for o in outcomes), outcomes
    assert "nothing was written" in str(outcomes[0])
    assert recorder.batches == []
    assert faulty_store.current_revision == 1

    writer_faults.on_statement = None
    after = await put(faulty_store, "ns/after")
    assert after.revision == 2, "the failed group used up no revisions"
    assert await faulty_store.get(EP, "ns/a") is None
    assert await faulty_store.get(EP, "ns/before") is not None
    assert [c.revision for c in await faulty_store.changes_since(0)] == [1, 2]


async def test_a_commit_that_reports_failure_but_landed_is_published_as_committed(
    faulty_store: SqliteDatastore, writer_faults: WriterFaults
) -> None:
    recorder = Recorder()
    faulty_store.add_listener(recorder)

    def commit_then_fail(sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        cursor = run()
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error after commit")
        return cursor

    writer_faults.on_statement = commit_then_fail
    (result,) = await faulty_store.write([Put(EP, "ns/a", b"a")])
    assert committed(result).revision == 1
    assert [c.key for c in recorder.changes] == ["ns/a"]


async def test_a_group_with_unknown_outcome_is_published_once_the_store_sees_it(
    faulty_store: SqliteDatastore, writer_faults: WriterFaults
) -> None:
    recorder = Recorder()
    faulty_store.add_listener(recorder)
    landed = False

    def lands_then_crashes(sql: str, run: Callable[[], sqlite3.Cursor]) -> sqlite3.Cursor:
        nonlocal landed
        if landed:  # a bug in the group commit, right after the COMMIT
            raise RuntimeError("crash after the commit")
        cursor = run()
        if sql == "COMMIT":
            landed = True
            raise sqlite3.OperationalError("disk I/O error after commit")
        return cursor

    writer_faults.on_statement = lands_then_crashes
    with pytest.raises(DatastoreUnavailable, match="outcome is unknown"):
        await faulty_store.write([Put(EP, "ns/a", b"a")])
    writer_faults.on_statement = None
    # Nobody writes: the committer re-reads the store by itself and publishes what landed.
    for _ in range(100):  # polled: the re-read comes after the committer's own wait
        if faulty_store.current_revision:
            break
        await asyncio.sleep(0.05)
    assert faulty_store.current_revision == 1
    assert [(c.revision, c.key) for c in recorder.changes] == [(1, "ns/a")]
    assert (await put(faulty_store, "ns/b")).revision == 2


async def test_close_finishes_writes_already_queued(db_path: Path) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    pending = [asyncio.ensure_future(store.write([Put(EP, f"ns/k{i}", b"v")])) for i in range(50)]
    await asyncio.sleep(0)  # every call is queued
    await store.close()
    results = await asyncio.gather(*pending)
    assert sorted(committed(r).revision for (r,) in results) == list(range(1, 51))
    reopened = SqliteDatastore(db_path)
    await reopened.open()
    try:
        assert reopened.current_revision == 50
    finally:
        await reopened.close()


async def test_commit_counters_count_groups_and_the_writes_in_them(sqlite_store: SqliteDatastore) -> None:
    await put(sqlite_store, "ns/a")
    await asyncio.gather(*(sqlite_store.write([Put(EP, f"ns/k{i}", b"v")]) for i in range(10)))
    groups = sqlite_store.groups_committed
    await sqlite_store.write([Put(EP, "ns/a", b"x", expected_mod_revision=0)])  # a conflict still goes through a group
    assert sqlite_store.writes_committed == 12
    assert sqlite_store.groups_committed == groups + 1


async def test_a_group_reads_its_rows_through_the_primary_key(sqlite_store: SqliteDatastore, db_path: Path) -> None:
    # A full scan per group went unnoticed in every functional test and cost a core at 100,000 objects.
    with sqlite3.connect(db_path) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + select_keys(3), ["workloadendpoint", "a", "b", "c"]).fetchall()
    conn.close()
    details = [row[-1] for row in plan]
    assert any("USING PRIMARY KEY" in detail for detail in details), details
    assert not any(detail.startswith("SCAN objects") for detail in details), details
