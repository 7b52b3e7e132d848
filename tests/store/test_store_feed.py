"""The change feed: listeners, snapshots consistent with them, history, compaction."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from epsync.store.base import Change, Datastore, Delete, Kind, Put, Record, RevisionCompacted
from epsync.store.sqlite import SqliteDatastore
from tests.store.conftest import EP, PR, Backend, Recorder, assert_revision_order, committed, put


def apply(state: dict[tuple[Kind, str], bytes], changes: Sequence[Change]) -> None:
    for change in changes:
        if change.value is None:
            del state[(change.kind, change.key)]
        else:
            state[(change.kind, change.key)] = change.value


async def test_listeners_get_each_group_once_in_revision_order(store: Datastore) -> None:
    recorder = Recorder()
    store.add_listener(recorder)
    results = await asyncio.gather(*(store.write([Put(EP, f"ns/k{i % 7}", str(i).encode())]) for i in range(200)))
    written = [(f"ns/k{i % 7}", committed(r).revision) for i, (r,) in enumerate(results)]
    assert_revision_order(recorder.changes)
    assert [(c.key, c.revision) for c in recorder.changes] == sorted(written, key=lambda w: w[1])
    assert [committed(r).revision for (r,) in results] == sorted(r for _, r in written), "calls commit in order"
    assert all(batch for batch in recorder.batches)
    if isinstance(store, SqliteDatastore):
        assert [c.revision for c in recorder.changes] == list(range(1, 201))
        assert len(recorder.batches) == store.groups_committed


async def test_change_carries_value_previous_value_and_create_revision(store: Datastore) -> None:
    recorder = Recorder()
    store.add_listener(recorder)
    n = store.current_revision
    await store.write([Put(PR, "p", b"one"), Put(PR, "p", b"two"), Delete(PR, "p")])
    assert recorder.changes == [
        Change(n + 1, PR, "p", b"one", None, n + 1),
        Change(n + 2, PR, "p", b"two", b"one", n + 1),
        Change(n + 3, PR, "p", None, b"two", n + 1),
    ]
    if isinstance(store, SqliteDatastore):
        assert len(recorder.batches) == 1, "one group commit, one batch"


async def test_changes_name_the_revision_of_the_value_they_replace(store: Datastore) -> None:
    # What a reader of the history needs to rebuild the state before its oldest change (sync/cache.py).
    recorder = Recorder()
    store.add_listener(recorder)
    start = store.current_revision
    results = await store.write([Put(PR, "q", b"one"), Put(PR, "q", b"two"), Delete(PR, "q")])
    r = [committed(result).revision for result in results]
    assert [c.previous_revision for c in recorder.changes] == [0, r[0], r[1]]
    assert [c.previous_revision for c in await store.changes_since(start)] == [0, r[0], r[1]]


async def test_listener_has_seen_a_write_before_the_writer_resumes(store: Datastore) -> None:
    seen: dict[str, int] = {}

    def listener(changes: Sequence[Change]) -> None:
        for change in changes:
            seen[change.key] = change.revision

    store.add_listener(listener)

    async def writer(i: int) -> None:
        result = await put(store, f"ns/k{i}")
        assert seen[f"ns/k{i}"] == result.revision  # read-your-writes through a listener-fed cache
        assert store.current_revision >= result.revision

    await asyncio.gather(*(writer(i) for i in range(100)))


async def test_a_failing_listener_is_logged_and_loses_nothing(
    store: Datastore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(changes: Sequence[Change]) -> None:
        raise RuntimeError("listener bug")

    recorder = Recorder()
    store.add_listener(broken)
    store.add_listener(recorder)
    with caplog.at_level(logging.ERROR, logger="epsync.store"):
        result = await put(store, "ns/a")
    assert result.revision == store.current_revision
    assert [c.key for c in recorder.changes] == ["ns/a"]
    assert "listener" in caplog.text
    assert await store.get(EP, "ns/a") is not None


async def test_snapshot_revision_is_the_current_revision_when_it_returns(store: Datastore) -> None:
    stop = asyncio.Event()

    async def churn(worker: int) -> None:
        i = 0
        while not stop.is_set():
            await put(store, f"ns/w{worker}-{i % 20}", str(i).encode())
            i += 1

    writers = [asyncio.create_task(churn(w)) for w in range(20)]
    try:
        for _ in range(20):
            await asyncio.sleep(0.005)  # paces the snapshots, so writes commit between them; decides nothing
            snapshot = await store.snapshot()
            assert snapshot.revision == store.current_revision
    finally:
        stop.set()
        await asyncio.gather(*writers)


async def test_snapshot_plus_later_listener_batches_rebuild_the_store_exactly(store: Datastore) -> None:
    """What the cache does at start-up, while writers are busy: subscribe, snapshot, then apply newer batches."""
    rng = random.Random(7)
    stop = asyncio.Event()
    # Enough data that reading the snapshot takes a while, so commits land while it reads.
    await store.write([Put(EP, f"bulk/{i:05}", rng.randbytes(200)) for i in range(20_000)])

    committed_writes = 0
    busy = asyncio.Event()  # the writers are committing

    async def churn(worker: int) -> None:
        nonlocal committed_writes
        while not stop.is_set():
            key = f"ns/k{rng.randrange(40)}"
            if rng.random() < 0.3:
                await store.write([Delete(EP, key)])
            else:
                await store.write([Put(EP, key, rng.randbytes(8)), Put(PR, f"p{rng.randrange(5)}", b"p")])
            committed_writes += 1
            if committed_writes >= 30:
                busy.set()

    writers = [asyncio.create_task(churn(w)) for w in range(30)]
    await busy.wait()
    groups_before = store.groups_committed if isinstance(store, SqliteDatastore) else 0

    cache: dict[tuple[Kind, str], bytes] = {}
    cache_revision = 0
    after_snapshot: int | None = None
    moved_on = asyncio.Event()  # the listener has applied batches past the snapshot

    def listener(changes: Sequence[Change]) -> None:
        nonlocal cache_revision
        newer = [c for c in changes if c.revision > cache_revision]
        apply(cache, newer)
        if newer:
            cache_revision = newer[-1].revision
        if after_snapshot is not None and cache_revision > after_snapshot:
            moved_on.set()

    store.add_listener(listener)
    snapshot = await store.snapshot()
    cache = {(r.kind, r.key): r.value for r in snapshot.records}
    cache_revision = after_snapshot = snapshot.revision
    if isinstance(store, SqliteDatastore):
        assert store.groups_committed > groups_before, "writes committed while the snapshot was read"

    await moved_on.wait()
    stop.set()
    await asyncio.gather(*writers)
    final = await store.snapshot()
    assert final.revision == cache_revision == store.current_revision
    assert cache == {(r.kind, r.key): r.value for r in final.records}
    assert final.revision > snapshot.revision > 0


async def test_changes_since_returns_every_later_change_ascending(store: Datastore) -> None:
    start = store.current_revision
    r = [
        committed(result).revision
        for result in await store.write(
            [Put(EP, "ns/a", b"1"), Put(PR, "p", b"2"), Put(EP, "ns/a", b"3"), Delete(EP, "ns/a")]
        )
    ]
    every = [
        Change(r[0], EP, "ns/a", b"1", None, r[0]),
        Change(r[1], PR, "p", b"2", None, r[1]),
        Change(r[2], EP, "ns/a", b"3", b"1", r[0]),
        Change(r[3], EP, "ns/a", None, b"3", r[0]),
    ]
    assert await store.changes_since(start) == every
    for since in (start, r[0], r[1], r[2]):
        later = [c for c in every if c.revision > since]
        assert await store.changes_since(since) == later
        assert await store.changes_since(since, limit=2) == later[:2]
    assert await store.changes_since(r[3]) == []
    assert await store.changes_since(r[3] + 1000) == []
    with pytest.raises(ValueError, match="limit"):
        await store.changes_since(start, limit=0)


async def test_compaction_drops_old_history_and_reports_the_oldest_revision(store: Datastore) -> None:
    revisions = [(await put(store, f"ns/k{i}")).revision for i in range(10)]
    assert await store.compact(keep=4) == revisions[-1] - 4
    oldest = store.oldest_revision
    assert oldest == revisions[-1] - 4
    assert [c.revision for c in await store.changes_since(oldest)] == [r for r in revisions if r > oldest]
    with pytest.raises(RevisionCompacted) as raised:
        await store.changes_since(oldest - 1)
    assert raised.value.oldest == oldest
    assert str(oldest) in str(raised.value)
    assert await store.compact(keep=100) == oldest, "compaction never moves backwards"
    assert await store.compact(keep=0) == revisions[-1]
    assert await store.changes_since(revisions[-1]) == []
    snapshot = await store.snapshot()
    assert len(snapshot.records) == 10, "compaction touches history, never objects"


async def test_objects_and_revisions_survive_a_restart(backend: Backend, location: str) -> None:
    store = backend.make(location)
    await store.open()
    written = [await put(store, f"ns/k{i}", str(i).encode()) for i in range(10)]
    await store.close()

    reopened = backend.make(location)
    await reopened.open()
    try:
        assert reopened.current_revision >= written[-1].revision
        assert reopened.oldest_revision <= reopened.current_revision
        for i, result in enumerate(written):
            record = Record(EP, f"ns/k{i}", str(i).encode(), result.revision, result.revision)
            assert await reopened.get(EP, f"ns/k{i}") == record
        assert (await reopened.snapshot()).records == [c.record for c in written]
        assert (await put(reopened, "ns/after")).revision > written[-1].revision
    finally:
        await reopened.close()


async def test_history_is_compacted_automatically_to_the_window(db_path: Path) -> None:
    store = SqliteDatastore(db_path, history_window=50)
    await store.open()
    try:
        for i in range(200):
            await put(store, f"ns/k{i % 9}")
        assert store.current_revision == 200
        assert 200 - 50 - 5 <= store.oldest_revision <= 200 - 50
        history = await store.changes_since(store.current_revision - 50)
        assert [c.revision for c in history] == list(range(151, 201))
        with pytest.raises(RevisionCompacted):
            await store.changes_since(store.oldest_revision - 1)
    finally:
        await store.close()


async def test_history_compaction_and_revisions_survive_a_restart(db_path: Path) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    for i in range(10):
        await put(store, f"ns/k{i}", str(i).encode())
    await store.compact(keep=3)
    expected_history = await store.changes_since(7)
    await store.close()

    reopened = SqliteDatastore(db_path)
    await reopened.open()
    try:
        assert (reopened.current_revision, reopened.oldest_revision) == (10, 7)
        assert await reopened.changes_since(7) == expected_history
        with pytest.raises(RevisionCompacted) as raised:
            await reopened.changes_since(3)
        assert raised.value.oldest == 7
        assert await reopened.get(EP, "ns/k3") == Record(EP, "ns/k3", b"3", 4, 4)
    finally:
        await reopened.close()


async def test_revisions_are_never_reused_after_deleting_everything_and_restarting(
    backend: Backend, location: str
) -> None:
    store = backend.make(location)
    await store.open()
    for i in range(5):
        await put(store, f"ns/k{i}")
    results = await store.write([Delete(EP, f"ns/k{i}") for i in range(5)])
    last = max(committed(r).revision for r in results)
    await store.compact(keep=0)
    await store.close()

    reopened = backend.make(location)
    await reopened.open()
    try:
        snapshot = await reopened.snapshot()
        assert snapshot.records == []
        assert snapshot.revision >= last
        again = await put(reopened, "ns/k0")
        assert again.revision > last
        assert committed(again).record == Record(EP, "ns/k0", b"v", again.revision, again.revision)
    finally:
        await reopened.close()
