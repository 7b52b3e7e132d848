"""What only the etcd datastore does: transactions, other writers, outages, compaction, TLS."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from epsync.store.base import (
    Change,
    Conflict,
    DatastoreError,
    DatastoreUnavailable,
    Delete,
    Kind,
    Put,
    Record,
    Write,
    WriteFailed,
)
from epsync.store.etcd import EtcdDatastore, EtcdTls
from epsync.store.etcd.client import Compare, DeleteOp, EtcdClient, PutOp
from tests.conftest import free_port
from tests.etcd_fixture import EtcdServer, WatchPartition, make_etcd_pki, started_etcd, unique_prefix
from tests.store.conftest import EP, PR, Recorder, assert_revision_order, committed, put

# Short waits, so the fault tests finish quickly.
FAST: dict[str, Any] = {"catch_up_seconds": 5.0, "reconnect_max_seconds": 0.3, "request_timeout": 3.0}


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def partition() -> WatchPartition:
    """Between `etcd_store`'s watch and etcd: a test cuts it to make the store's feed fall behind."""
    return WatchPartition()


@pytest.fixture
async def etcd_store(session_etcd: EtcdServer, prefix: str, partition: WatchPartition) -> AsyncIterator[EtcdDatastore]:
    store = EtcdDatastore([session_etcd.endpoint], prefix=prefix, connect=partition.connect, **FAST)
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def raw(session_etcd: EtcdServer) -> AsyncIterator[EtcdClient]:
    """Another etcd client: a writer that is not this store (etcdctl, another program)."""
    async with EtcdClient(session_etcd.endpoint, timeout=10) as client:
        yield client


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll `condition` (state that listeners update) until it holds; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def state_of(changes: Sequence[Change], start: dict[tuple[Kind, str], bytes] | None = None) -> dict[Any, bytes]:
    state = dict(start or {})
    for change in changes:
        if change.value is None:
            del state[(change.kind, change.key)]
        else:
            state[(change.kind, change.key)] = change.value
    return state


# ------------------------------------------------------------------------- transactions


async def test_a_failing_precondition_in_a_batched_txn_reruns_the_others_each_with_its_own_result(
    etcd_store: EtcdDatastore,
) -> None:
    before = [await put(etcd_store, f"ns/k{i}", b"old") for i in range(8)]
    txns, reruns = etcd_store.txns_committed, etcd_store.txn_reruns
    writes: list[Write] = [Put(EP, f"ns/k{i}", b"new", expected_mod_revision=before[i].revision) for i in range(8)]
    writes[3] = Put(EP, "ns/k3", b"stale", expected_mod_revision=before[3].revision - 1)
    writes[5] = Put(EP, "ns/k5", b"exists", expected_mod_revision=0)
    writes.append(Put(PR, "unconditional", b"u"))
    writes.append(Delete(PR, "missing"))
    results = await etcd_store.write(writes)

    assert results[3] == Conflict(before[3].record)
    assert results[5] == Conflict(before[5].record)
    assert results[9] == Conflict(None)
    done = [committed(results[i]) for i in (0, 1, 2, 4, 6, 7, 8)]
    assert len({c.revision for c in done}) == 1, "the re-run commits the rest in one txn"
    assert [c.record for c in done[:6]] == [
        Record(EP, f"ns/k{i}", b"new", before[i].revision, done[0].revision) for i in (0, 1, 2, 4, 6, 7)
    ]
    assert (etcd_store.txns_committed - txns, etcd_store.txn_reruns - reruns) == (1, 1)
    assert (await etcd_store.get(EP, "ns/k3")) == before[3].record


async def test_a_call_is_split_into_txns_of_at_most_the_op_cap_and_never_one_key_twice(
    session_etcd: EtcdServer, prefix: str
) -> None:
    store = EtcdDatastore([session_etcd.endpoint], prefix=prefix, max_txn_ops=10, **FAST)
    await store.open()
    try:
        writes: list[Write] = [Put(EP, f"ns/k{i}", b"v") for i in range(25)]
        writes += [Put(EP, "ns/k22", b"again"), Put(EP, "ns/x", b"x")]
        results = [committed(r) for r in await store.write(writes)]
        revisions = [r.revision for r in results]
        start = revisions[0]
        assert revisions == [start] * 10 + [start + 1] * 10 + [start + 2] * 5 + [start + 3] * 2
        assert results[25].previous == results[22].record
    finally:
        await store.close()


async def test_concurrent_calls_share_txns_and_commit_in_the_order_they_were_made(etcd_store: EtcdDatastore) -> None:
    txns = etcd_store.txns_committed
    results = await asyncio.gather(*(etcd_store.write([Put(EP, f"ns/k{i % 50}", b"v")]) for i in range(300)))
    revisions = [committed(r).revision for (r,) in results]
    assert revisions == sorted(revisions)
    assert etcd_store.txns_committed - txns <= 12, "300 writes to 50 keys need few txns"


async def test_a_write_over_the_request_cap_fails_alone(session_etcd: EtcdServer, prefix: str) -> None:
    # Our own byte cap set above etcd's, so the oversized txn is split by halving when etcd refuses it.
    store = EtcdDatastore([session_etcd.endpoint], prefix=prefix, max_txn_bytes=64 * 1024 * 1024, **FAST)
    await store.open()
    try:
        with pytest.raises(WriteFailed) as raised:
            await store.write(
                [Put(EP, "ns/a", b"a"), Put(EP, "ns/huge", b"x" * (3 * 1024 * 1024)), Put(EP, "ns/b", b"b")]
            )
        first, huge, last = raised.value.outcomes
        assert isinstance(huge, DatastoreError)
        assert "too large" in str(huge)
        assert committed(first).record == await store.get(EP, "ns/a")  # type: ignore[arg-type]
        assert committed(last).record == await store.get(EP, "ns/b")  # type: ignore[arg-type]
        assert await store.get(EP, "ns/huge") is None
    finally:
        await store.close()


# ------------------------------------------------------------------------- the change feed


async def test_writes_by_another_client_reach_the_listeners(
    etcd_store: EtcdDatastore, raw: EtcdClient, prefix: str
) -> None:
    recorder = Recorder()
    etcd_store.add_listener(recorder)
    mine = await put(etcd_store, "ns/mine", b"1")
    created = await raw.put(f"{prefix}workloadendpoints/ns/theirs", b"a")
    updated = await raw.put(f"{prefix}workloadendpoints/ns/theirs", b"b")
    await raw.put(f"{prefix}unknownkind/x", b"ignored")
    await raw.put("/elsewhere/profiles/p", b"not ours")
    # One etcd txn changing several keys: one revision, one batch.
    txn = await raw.txn(
        [Compare(f"{prefix}workloadendpoints/ns/mine", "mod_revision", "==", mine.revision)],
        [
            PutOp(f"{prefix}profiles/p1", b"p1"),
            PutOp(f"{prefix}profiles/p2", b"p2"),
            DeleteOp(f"{prefix}workloadendpoints/ns/mine"),
        ],
    )
    assert txn.succeeded
    await eventually(lambda: etcd_store.current_revision >= txn.revision)

    r = txn.revision
    assert recorder.changes == [
        Change(mine.revision, EP, "ns/mine", b"1", None, mine.revision),
        Change(created.revision, EP, "ns/theirs", b"a", None, created.revision),
        Change(updated.revision, EP, "ns/theirs", b"b", b"a", created.revision),
        Change(r, PR, "p1", b"p1", None, r),
        Change(r, PR, "p2", b"p2", None, r),
        Change(r, EP, "ns/mine", None, b"1", mine.revision),
    ]
    assert recorder.batches[-1] == recorder.changes[-3:], "one etcd revision, one batch"
    snapshot = await etcd_store.snapshot()
    assert snapshot.revision == r
    assert [(x.kind, x.key, x.value) for x in snapshot.records] == [
        (PR, "p1", b"p1"),
        (PR, "p2", b"p2"),
        (EP, "ns/theirs", b"b"),
    ]
    assert await etcd_store.changes_since(mine.revision - 1) == recorder.changes


async def test_two_replicas_on_one_prefix_see_each_others_writes_and_conflicts(
    session_etcd: EtcdServer, prefix: str
) -> None:
    a = EtcdDatastore([session_etcd.endpoint], prefix=prefix, **FAST)
    b = EtcdDatastore([session_etcd.endpoint], prefix=prefix, **FAST)
    await a.open()
    await b.open()
    try:
        seen_by_b = Recorder()
        b.add_listener(seen_by_b)
        first = await put(a, "ns/x", b"from a")
        (conflict,) = await b.write([Put(EP, "ns/x", b"from b", expected_mod_revision=0)])
        assert conflict == Conflict(first.record)
        (swapped,) = await b.write([Put(EP, "ns/x", b"from b", expected_mod_revision=first.revision)])
        await eventually(lambda: a.current_revision >= committed(swapped).revision)
        assert (await a.snapshot()).records == (await b.snapshot()).records == [committed(swapped).record]
        assert [c.value for c in seen_by_b.changes] == [b"from a", b"from b"]
    finally:
        await a.close()
        await b.close()


async def test_a_write_returns_after_the_listeners_saw_it_or_says_it_committed(
    session_etcd: EtcdServer, prefix: str, raw: EtcdClient
) -> None:
    partition = WatchPartition()
    settings = FAST | {"catch_up_seconds": 0.3}
    store = EtcdDatastore([session_etcd.endpoint], prefix=prefix, connect=partition.connect, **settings)
    await store.open()
    recorder = Recorder()
    store.add_listener(recorder)
    try:
        result = await put(store, "ns/a", b"1")
        assert recorder.changes[-1].revision == result.revision == store.current_revision

        partition.cut()  # this replica's watch falls behind
        with pytest.raises(DatastoreUnavailable, match=r"did commit .*revision \d+.*not caught up") as raised:
            await put(store, "ns/b", b"2")
        assert "the outcome is known: committed" in str(raised.value)
        stored = await raw.get(f"{prefix}workloadendpoints/ns/b")
        assert stored is not None
        assert str(stored.mod_revision) in str(raised.value)
        assert [c.key for c in recorder.changes] == ["ns/a"]

        partition.heal()
        await eventually(lambda: store.current_revision >= stored.mod_revision)
        assert [c.key for c in recorder.changes] == ["ns/a", "ns/b"]
    finally:
        await store.close()


# ------------------------------------------------------------------------- faults


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_etcd_stopped_and_started_mid_stream_loses_and_repeats_nothing(
    etcd: EtcdServer, etcd_client: EtcdClient, how: str
) -> None:
    prefix = "/epsync/v1/"
    store = EtcdDatastore([etcd.endpoint], prefix=prefix, **FAST)
    await store.open()
    start = store.current_revision
    recorder = Recorder()
    health: list[bool] = []
    store.add_listener(recorder)
    store.add_health_listener(health.append)
    assert store.healthy
    try:
        for i in range(10):
            await put(store, f"ns/before{i}", b"1")
        # Another writer's burst, straight into the outage: the watch may not have delivered all of it.
        for i in range(50):
            await etcd_client.put(f"{prefix}profiles/burst{i}", b"b")
        etcd.stop() if how == "stop" else etcd.kill()

        await eventually(lambda: health == [False])
        assert not store.healthy
        with pytest.raises(DatastoreUnavailable, match=rf"etcd at {etcd.endpoint} is unavailable"):
            await put(store, "ns/during", b"x")
        with pytest.raises(DatastoreUnavailable, match="is unavailable"):
            await store.get(EP, "ns/before0")
        cached = await store.snapshot()  # reads from what the store holds go on
        assert cached.revision == store.current_revision

        etcd.start()
        await eventually(lambda: health == [False, True])
        assert store.healthy
        await eventually(lambda: len(recorder.changes) == 60)
        after = await put(store, "ns/after", b"2")
        async with EtcdClient(etcd.endpoint) as again:
            other = await again.put(f"{prefix}profiles/after", b"3")
        await eventually(lambda: store.current_revision >= other.revision)

        assert_revision_order(recorder.changes)
        assert recorder.changes == await store.changes_since(start), "every change once, in order"
        assert [c.key for c in recorder.changes][-2:] == ["ns/after", "after"]
        assert after.revision < other.revision
        assert await store.get(EP, "ns/during") is None
        assert state_of(recorder.changes) == {(r.kind, r.key): r.value for r in (await store.snapshot()).records}
    finally:
        await store.close()


async def test_compaction_past_the_watch_revision_delivers_exactly_the_difference(
    etcd_store: EtcdDatastore, partition: WatchPartition, raw: EtcdClient, prefix: str
) -> None:
    recorder = Recorder()
    etcd_store.add_listener(recorder)
    keep = await put(etcd_store, "ns/keep", b"same")
    change = await put(etcd_store, "ns/change", b"old")
    remove = await put(etcd_store, "ns/remove", b"gone soon")
    twice = await put(etcd_store, "twice", b"v1", kind=PR)
    change_then_remove = await put(etcd_store, "ns/change-then-remove", b"x")
    before = state_of(recorder.changes)
    batches_before = len(recorder.batches)

    partition.cut()  # a long outage of this replica's watch, as far as etcd's history goes
    key = f"{prefix}workloadendpoints/"
    await raw.put(key + "ns/change", b"new")
    await raw.delete_range(key + "ns/remove")
    await raw.put(f"{prefix}profiles/twice", b"v2")
    await raw.put(f"{prefix}profiles/twice", b"v3")
    await raw.put(key + "ns/change-then-remove", b"y")
    await raw.delete_range(key + "ns/change-then-remove")
    born = await raw.put(key + "ns/born", b"new here")
    await raw.put(key + "ns/born-and-gone", b"brief")
    await raw.delete_range(key + "ns/born-and-gone")
    await raw.put(key + "ns/keep", b"same")  # the same value, but a new mod_revision: a change
    await raw.delete_range(key + "ns/keep")
    recreated = await raw.put(key + "ns/keep", b"same")
    last = await raw.put("/elsewhere", b"unrelated")
    await raw.compact(last.revision, physical=True)
    partition.heal()

    await eventually(lambda: etcd_store.relists == 1 and len(recorder.batches) > batches_before)
    (synthetic,) = recorder.batches[batches_before:]
    s = synthetic[0].revision
    assert s >= last.revision
    assert synthetic == [
        Change(s, PR, "twice", b"v3", b"v1", twice.revision),
        Change(s, EP, "ns/born", b"new here", None, born.revision),
        Change(s, EP, "ns/change", b"new", b"old", change.revision),
        Change(s, EP, "ns/change-then-remove", None, b"x", change_then_remove.revision),
        Change(s, EP, "ns/keep", b"same", b"same", recreated.revision),
        Change(s, EP, "ns/remove", None, b"gone soon", remove.revision),
    ]
    assert keep.revision < recreated.revision
    assert state_of(synthetic, before) == {(r.kind, r.key): r.value for r in (await etcd_store.snapshot()).records}
    assert etcd_store.oldest_revision >= s
    # The records keep their own mod_revision; only the synthetic changes carry S.
    assert await etcd_store.get(EP, "ns/keep") == Record(EP, "ns/keep", b"same", recreated.revision, recreated.revision)
    assert Record(EP, "ns/born", b"new here", born.revision, born.revision) in (await etcd_store.snapshot()).records

    # The watch goes on from there.
    later = await raw.put(key + "ns/later", b"l")
    await eventually(lambda: etcd_store.current_revision >= later.revision)
    assert recorder.changes[-1] == Change(later.revision, EP, "ns/later", b"l", None, later.revision)
    assert (await put(etcd_store, "ns/mine", b"m")).revision > later.revision


async def test_a_relist_that_finds_nothing_changed_delivers_nothing(
    etcd_store: EtcdDatastore, partition: WatchPartition, raw: EtcdClient
) -> None:
    recorder = Recorder()
    etcd_store.add_listener(recorder)
    await put(etcd_store, "ns/a", b"1")
    partition.cut()
    last = await raw.put("/elsewhere", b"unrelated")
    await raw.put("/elsewhere", b"again")
    await raw.compact(last.revision + 1, physical=True)
    partition.heal()
    await eventually(lambda: etcd_store.relists == 1)
    assert len(recorder.batches) == 1
    assert etcd_store.current_revision == last.revision + 1


async def test_an_unreachable_etcd_fails_open_with_a_clear_error() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    store = EtcdDatastore([endpoint], request_timeout=2.0)
    with pytest.raises(DatastoreUnavailable, match=rf"etcd at {endpoint} is unavailable"):
        await store.open()


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="prefix"):
        EtcdDatastore(["127.0.0.1:2379"], prefix="no-slashes")
    with pytest.raises(ValueError, match="host:port"):
        EtcdDatastore(["https://127.0.0.1:2379"])  # https needs TLS settings
    with pytest.raises(ValueError, match="max_txn_ops"):
        EtcdDatastore(["127.0.0.1:2379"], max_txn_ops=0)


# ------------------------------------------------------------------------- TLS


async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    pki = make_etcd_pki(tmp_path / "pki")
    server = started_etcd(tmp_path / "etcd", tls=pki)
    try:
        tls = EtcdTls(ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key)
        store = EtcdDatastore([server.url], tls=tls, **FAST)
        await store.open()
        try:
            assert store.healthy
            written = await put(store, "ns/secure", b"s")
            assert await store.get(EP, "ns/secure") == written.record
        finally:
            await store.close()

        without_certificate = EtcdDatastore([server.url], tls=EtcdTls(ca_file=pki.ca_file), request_timeout=2.0)
        with pytest.raises(DatastoreError, match=rf"etcd at {server.url}"):
            await without_certificate.open()
        with pytest.raises(DatastoreError, match="cannot set up TLS"):
            await EtcdDatastore([server.url], tls=EtcdTls(ca_file=tmp_path / "missing.pem")).open()
    finally:
        server.stop()


async def test_an_empty_prefix_is_refused_when_a_store_is_expected(session_etcd: EtcdServer, prefix: str) -> None:
    expecting = EtcdDatastore([session_etcd.endpoint], prefix=prefix, expect_existing=True)
    with pytest.raises(DatastoreError, match="holds no epsync store under"):
        await expecting.open()
    made = EtcdDatastore([session_etcd.endpoint], prefix=prefix)
    await made.open()
    identity = made.identity
    await made.close()
    again = EtcdDatastore([session_etcd.endpoint], prefix=prefix, expect_existing=True)
    await again.open()
    try:
        assert again.identity == identity
    finally:
        await again.close()


async def test_a_frozen_etcd_turns_the_store_unhealthy_and_back(etcd: EtcdServer, prefix: str) -> None:
    """SIGSTOP keeps etcd's connections open and silent: the watch alone would not notice; the probe does."""
    store = EtcdDatastore([etcd.endpoint], prefix=prefix, probe_seconds=0.3, request_timeout=1.0)
    await store.open()
    health: list[bool] = []
    store.add_health_listener(health.append)
    try:
        assert store.healthy
        os.kill(etcd.pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(10):
                while store.healthy:  # noqa: ASYNC110 - the probe runs in its own task
                    await asyncio.sleep(0.05)
        finally:
            os.kill(etcd.pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            while not store.healthy:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert health[:1] == [False]
        assert health[-1] is True
        await put(store, "ns/after")  # and it writes again
    finally:
        await store.close()
