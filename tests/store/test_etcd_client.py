"""The etcd client against a real etcd: reads, writes, transactions, watches, compaction and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable

import pytest

from epsync.store.etcd.client import (
    Compare,
    DeleteOp,
    DeleteResult,
    EtcdClient,
    EtcdCompacted,
    EtcdFutureRevision,
    EtcdRequestTooLarge,
    EtcdUnavailable,
    EtcdWatchCanceled,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    WatchBatch,
    WatchEvent,
    endpoints_target,
    prefix_range_end,
)
from tests.conftest import free_port
from tests.etcd_fixture import EtcdServer


async def collect_events(batches: AsyncIterable[WatchBatch], count: int) -> list[WatchEvent]:
    """The events of the next batches, until there are at least `count`."""
    events: list[WatchEvent] = []
    async with asyncio.timeout(10):
        async for batch in batches:
            events.extend(batch.events)
            if len(events) >= count:
                break
    return events


async def test_put_then_get_returns_the_value_and_its_revisions(etcd_client: EtcdClient) -> None:
    first = await etcd_client.put(b"/k", b"one")
    assert first.prev_kv is None
    kv = await etcd_client.get("/k")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        b"/k",
        b"one",
        first.revision,
        first.revision,
        1,
    )

    second = await etcd_client.put(b"/k", b"two", prev_kv=True)
    assert second.revision == first.revision + 1
    assert second.prev_kv == kv
    kv = await etcd_client.get(b"/k")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"two", first.revision, second.revision, 2)
    assert await etcd_client.get(b"/missing") is None


async def test_prefix_range_in_key_order_with_limit_keys_only_count_only_and_old_revision(
    etcd_client: EtcdClient,
) -> None:
    for key in (b"/a/2", b"/b/1", b"/a/1", b"/a"):
        await etcd_client.put(key, b"v-" + key)
    before = await etcd_client.put(b"/a/3", b"old")
    await etcd_client.put(b"/a/3", b"new")

    every = await etcd_client.range(b"/a/", prefix=True)
    assert [kv.key for kv in every.kvs] == [b"/a/1", b"/a/2", b"/a/3"]
    assert (every.count, every.more, every.kvs[-1].value) == (3, False, b"new")
    assert every.revision == before.revision + 1

    limited = await etcd_client.range(b"/a/", prefix=True, limit=2)
    assert ([kv.key for kv in limited.kvs], limited.count, limited.more) == ([b"/a/1", b"/a/2"], 3, True)

    keys = await etcd_client.range(b"/a/", prefix=True, keys_only=True)
    assert [(kv.key, kv.value) for kv in keys.kvs] == [(b"/a/1", b""), (b"/a/2", b""), (b"/a/3", b"")]

    counted = await etcd_client.range(b"/", prefix=True, count_only=True)
    assert (counted.kvs, counted.count) == ([], 5)

    between = await etcd_client.range(b"/a/2", range_end=b"/b/2")
    assert [kv.key for kv in between.kvs] == [b"/a/2", b"/a/3", b"/b/1"]

    old = await etcd_client.range(b"/a/3", revision=before.revision)
    assert [kv.value for kv in old.kvs] == [b"old"]
    assert await etcd_client.current_revision() == every.revision


async def test_txn_runs_the_success_ops_when_the_mod_revision_matches(etcd_client: EtcdClient) -> None:
    written = await etcd_client.put(b"/k", b"one")
    result = await etcd_client.txn(
        [Compare(b"/k", "mod_revision", "==", written.revision)],
        [PutOp(b"/k", b"two", prev_kv=True), PutOp(b"/other", b"x")],
        [RangeOp(b"/k")],
    )
    assert result.succeeded
    assert result.revision == written.revision + 1  # one revision for the whole txn
    put, other = result.responses
    assert isinstance(put, PutResult)
    assert put.prev_kv is not None
    assert put.prev_kv.value == b"one"
    assert isinstance(other, PutResult)
    kv = await etcd_client.get(b"/k")
    assert kv is not None
    assert (kv.value, kv.mod_revision) == (b"two", result.revision)


async def test_txn_runs_the_failure_ops_and_writes_nothing_when_the_mod_revision_is_stale(
    etcd_client: EtcdClient,
) -> None:
    first = await etcd_client.put(b"/k", b"one")
    second = await etcd_client.put(b"/k", b"two")
    result = await etcd_client.txn(
        [Compare(b"/k", "mod_revision", "==", first.revision)],
        [PutOp(b"/k", b"three")],
        [RangeOp(b"/k")],
    )
    assert not result.succeeded
    assert result.revision == second.revision  # nothing written
    (current,) = result.responses
    assert isinstance(current, RangeResult)
    assert [(kv.value, kv.mod_revision) for kv in current.kvs] == [(b"two", second.revision)]
    kv = await etcd_client.get(b"/k")
    assert kv is not None
    assert kv.value == b"two"


async def test_txn_compares_create_revision_and_version_of_missing_keys_as_zero(etcd_client: EtcdClient) -> None:
    create = [Compare(b"/new", "create_revision", "==", 0)]
    created = await etcd_client.txn(create, [PutOp(b"/new", b"1")])
    assert created.succeeded
    again = await etcd_client.txn(create, [PutOp(b"/new", b"2")])
    assert not again.succeeded
    versioned = await etcd_client.txn([Compare(b"/new", "version", ">", 0)], [DeleteOp(b"/new", prev_kv=True)])
    assert versioned.succeeded
    (deleted,) = versioned.responses
    assert isinstance(deleted, DeleteResult)
    assert (deleted.deleted, [kv.value for kv in deleted.prev_kvs]) == (1, [b"1"])
    valued = await etcd_client.txn([Compare(b"/new", "value", "==", b"1")], [PutOp(b"/new", b"3")])
    assert not valued.succeeded


async def test_txn_over_the_op_cap_raises_request_too_large(etcd_client: EtcdClient) -> None:
    with pytest.raises(EtcdRequestTooLarge, match="too many operations"):
        await etcd_client.txn([], [PutOp(f"/k{i}", b"v") for i in range(129)])


async def test_delete_range_deletes_one_key_or_a_prefix_and_returns_what_it_deleted(etcd_client: EtcdClient) -> None:
    for key in (b"/a/1", b"/a/2", b"/b/1"):
        await etcd_client.put(key, key)
    one = await etcd_client.delete_range(b"/b/1")
    assert one.deleted == 1
    assert one.prev_kvs == []
    prefix = await etcd_client.delete_range(b"/a/", prefix=True, prev_kv=True)
    assert prefix.revision == one.revision + 1
    assert (prefix.deleted, [(kv.key, kv.value) for kv in prefix.prev_kvs]) == (
        2,
        [(b"/a/1", b"/a/1"), (b"/a/2", b"/a/2")],
    )
    nothing = await etcd_client.delete_range(b"/missing")
    assert (nothing.deleted, nothing.revision) == (0, prefix.revision)
    assert (await etcd_client.range(b"/", prefix=True, count_only=True)).count == 0


async def test_watch_from_a_revision_sees_puts_and_deletes_with_prev_kv_in_order(etcd_client: EtcdClient) -> None:
    await etcd_client.put(b"/elsewhere", b"x")
    created = await etcd_client.put(b"/w/a", b"1")
    updated = await etcd_client.put(b"/w/a", b"2")
    other = await etcd_client.put(b"/w/b", b"1")
    deleted = await etcd_client.delete_range(b"/w/a")

    async with etcd_client.watch(b"/w/", prefix=True, start_revision=created.revision, prev_kv=True) as watch:
        batches = aiter(watch)
        history = await collect_events(batches, 4)
        assert watch.watch_id is not None
        assert watch.created_revision == deleted.revision
        live = await etcd_client.put(b"/w/b", b"2")
        await etcd_client.put(b"/elsewhere", b"y")  # outside the prefix: not seen
        (update_b,) = await collect_events(batches, 1)

    assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in history] == [
        ("put", b"/w/a", b"1", created.revision),
        ("put", b"/w/a", b"2", updated.revision),
        ("put", b"/w/b", b"1", other.revision),
        ("delete", b"/w/a", b"", deleted.revision),
    ]
    assert [e.prev_kv.value if e.prev_kv else None for e in history] == [None, b"1", None, b"2"]
    assert (update_b.kv.value, update_b.kv.mod_revision, update_b.kv.version) == (b"2", live.revision, 2)
    assert update_b.prev_kv is not None
    assert update_b.prev_kv.value == b"1"


async def test_watch_from_a_compacted_revision_raises_compacted_with_the_compact_revision(
    etcd_client: EtcdClient,
) -> None:
    first = await etcd_client.put(b"/k", b"1")
    for value in (b"2", b"3"):
        await etcd_client.put(b"/k", value)
    last = await etcd_client.put(b"/k", b"4")
    await etcd_client.compact(last.revision, physical=True)

    with pytest.raises(EtcdCompacted) as raised:
        async with etcd_client.watch(b"/k", start_revision=first.revision) as watch:
            await collect_events(watch, 1)
    assert (raised.value.compact_revision, raised.value.requested) == (last.revision, first.revision)

    # From the compact revision on, the history is there.
    async with etcd_client.watch(b"/k", start_revision=last.revision) as watch:
        (event,) = await collect_events(watch, 1)
    assert (event.kv.value, event.kv.mod_revision) == (b"4", last.revision)


async def test_reads_at_a_compacted_or_future_revision_raise(etcd_client: EtcdClient) -> None:
    first = await etcd_client.put(b"/k", b"1")
    last = await etcd_client.put(b"/k", b"2")
    await etcd_client.compact(last.revision)
    with pytest.raises(EtcdCompacted) as raised:
        await etcd_client.range(b"/k", revision=first.revision)
    assert (raised.value.compact_revision, raised.value.requested) == (None, first.revision)
    with pytest.raises(EtcdFutureRevision):
        await etcd_client.range(b"/k", revision=last.revision + 10)


async def test_cancel_ends_a_watch_quietly_from_another_task(etcd_client: EtcdClient) -> None:
    watch = etcd_client.watch(b"/k")
    await watch.start()
    values: list[bytes] = []
    seen = asyncio.Event()

    async def consume() -> None:
        async for batch in watch:
            values.extend(event.kv.value for event in batch.events)
            seen.set()

    task = asyncio.create_task(consume())
    await etcd_client.put(b"/k", b"1")
    async with asyncio.timeout(10):
        await seen.wait()
        watch.cancel()
        await task  # ends without an exception
    assert values == [b"1"]


async def test_a_watch_cancelled_while_it_is_being_set_up_ends_at_once(etcd_client: EtcdClient) -> None:
    for yields in range(6):  # cancel at each point of the set-up: before the write, during it, during the read
        watch = etcd_client.watch(b"/k")
        starting = asyncio.create_task(watch.start())
        for _ in range(yields):
            await asyncio.sleep(0)
        watch.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(EtcdWatchCanceled):
                await starting
    async with etcd_client.watch(b"/k") as live:  # and the client still works
        assert live.created_revision is not None


async def test_a_silent_etcd_fails_a_watch_set_up_after_the_timeout() -> None:
    # A listener that accepts connections and never answers: no HTTP/2, no watch.
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with EtcdClient(f"127.0.0.1:{port}", timeout=0.5) as client, asyncio.timeout(10):
            with pytest.raises(EtcdUnavailable, match="did not set the watch up"):
                await client.watch(b"/k").start()
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_a_watch_sees_every_change_after_it_is_created(etcd_client: EtcdClient) -> None:
    before = await etcd_client.put(b"/k", b"0")
    async with etcd_client.watch(b"/k") as watch:
        assert watch.created_revision == before.revision
        after = await etcd_client.put(b"/k", b"1")
        (event,) = await collect_events(watch, 1)
    assert (event.kv.value, event.kv.mod_revision) == (b"1", after.revision)


async def test_a_watch_raises_unavailable_when_etcd_goes_away(etcd: EtcdServer, etcd_client: EtcdClient) -> None:
    async with etcd_client.watch(b"/k") as watch:
        batches = aiter(watch)
        await etcd_client.put(b"/k", b"1")
        await anext(batches)  # the watch is live
        etcd.kill()
        with pytest.raises(EtcdUnavailable):
            async with asyncio.timeout(10):
                await anext(batches)


async def test_status_reports_the_server_version_and_revision(etcd_client: EtcdClient) -> None:
    written = await etcd_client.put(b"/k", b"1")
    status = await etcd_client.status()
    assert status.version.startswith("3.")
    assert status.revision == written.revision
    assert status.leader == status.member_id


async def test_calls_to_an_unreachable_etcd_raise_unavailable() -> None:
    async with EtcdClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(EtcdUnavailable):
            await client.put(b"/k", b"1")


def test_prefix_range_end_covers_exactly_the_keys_with_the_prefix() -> None:
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_endpoints_target_accepts_urls_and_several_ip_addresses() -> None:
    assert endpoints_target(["http://etcd:2379/"]) == "etcd:2379"
    assert endpoints_target(["10.0.0.1:2379", "http://10.0.0.2:2379"]) == "ipv4:10.0.0.1:2379,10.0.0.2:2379"
    assert endpoints_target(["[::1]:2379", "[::2]:2379"]) == "ipv6:[::1]:2379,[::2]:2379"
    with pytest.raises(ValueError, match="IP addresses"):
        endpoints_target(["etcd-0:2379", "etcd-1:2379"])
    with pytest.raises(ValueError, match="host:port"):
        endpoints_target(["https://etcd:2379"])
