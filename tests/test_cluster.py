"""Several epsync replicas on one real etcd: shared versions, fail-over, and etcd's faults."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from epsync.client import Client
from epsync.client.view import Backoff
from epsync.errors import NotFound, OutOfRange, Unavailable
from epsync.server.app import EpsyncServer
from epsync.server.config import ServerConfig
from epsync.store.etcd import EtcdDatastore
from epsync.store.etcd.client import Compare, DeleteOp, EtcdClient
from epsync.v1.watch_pb2 import ADDED, DELETED, MODIFIED
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.conftest import serve_process, server_config
from tests.etcd_fixture import EtcdServer, WatchPartition
from tests.factories import endpoint
from tests.watch_streams import channel, named, objects, running_server, watch_endpoints


@pytest.fixture
def etcd_settings(session_etcd: EtcdServer) -> dict[str, Any]:
    return {
        "datastore": "etcd",
        "etcd_endpoints": (session_etcd.endpoint,),
        "etcd_prefix": f"/test-{uuid.uuid4().hex}/",
    }


@asynccontextmanager
async def replicas(tmp_path: Path, settings: dict[str, Any], count: int = 2) -> AsyncIterator[list[EpsyncServer]]:
    async with (
        running_server(tmp_path / "a", **settings) as first,
        running_server(tmp_path / "b", **settings) as second,
    ):
        yield [first, second][:count]


@asynccontextmanager
async def partitioned_server(
    data_dir: Path, settings: dict[str, Any], partition: WatchPartition
) -> AsyncIterator[EpsyncServer]:
    """A replica as `running_server` makes it, but whose etcd watch `partition` can cut off from etcd."""
    config = server_config(data_dir, **settings)
    store = EtcdDatastore(config.etcd_endpoints, prefix=config.etcd_prefix, connect=partition.connect)
    server = EpsyncServer(config, store=store)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


async def test_replicas_hand_out_the_same_versions(tmp_path: Path, etcd_settings: dict[str, Any]) -> None:
    async with (
        replicas(tmp_path, etcd_settings) as (a, b),
        Client(f"127.0.0.1:{a.port}") as ca,
        Client(f"127.0.0.1:{b.port}") as cb,
    ):
        created = await ca.create_endpoint(endpoint("web-1"))
        # Read-your-writes across replicas: the client names the version it needs.
        request_version = created.metadata.resource_version
        await b.cache.wait_for_revision(request_version, 5)
        assert await cb.get_endpoint("web-1") == created


async def test_writes_through_any_replica_or_etcdctl_reach_every_replicas_watchers(
    tmp_path: Path, etcd_settings: dict[str, Any], session_etcd: EtcdServer
) -> None:
    async with replicas(tmp_path, etcd_settings) as (a, b), Client(f"127.0.0.1:{a.port}") as ca, channel(b) as opened:
        stream = watch_endpoints(opened, send_initial_events=True)
        await stream.until_synced()
        await ca.create_endpoint(endpoint("via-a"))
        assert named(await stream.until_count(1)) == [(ADDED, "via-a")]
        # A write from outside epsync (as etcdctl would make it) reaches the watchers too.
        stored = next(o for o in objects(stream.events)).object
        stored.metadata.labels["touched"] = "outside"
        stored.metadata.resource_version = 0
        async with EtcdClient(session_etcd.endpoint) as etcd:
            await etcd.put(f"{etcd_settings['etcd_prefix']}workloadendpoints/default/via-a", stored.SerializeToString())
        assert named(await stream.until_count(2)) == [(ADDED, "via-a"), (MODIFIED, "via-a")]


async def test_a_watcher_resumes_on_another_replica_without_a_full_resend(
    tmp_path: Path, etcd_settings: dict[str, Any]
) -> None:
    async with replicas(tmp_path, etcd_settings) as (a, b), Client(f"127.0.0.1:{a.port}") as ca:
        held = {}
        for i in range(20):
            wep = await ca.create_endpoint(endpoint(f"e{i}"))
            held[f"default/{wep.metadata.name}"] = wep.metadata.resource_version
        async with channel(a) as opened:
            stream = watch_endpoints(opened, send_initial_events=True)
            events = await stream.until_synced()
        revision = events[-1].resource_version
        changed = await ca.update_endpoint(endpoint("e3", labels={"v": "2"}))
        await b.cache.wait_for_revision(changed.metadata.resource_version, 5)
        async with channel(b) as opened:
            resumed = watch_endpoints(opened, resource_version=revision, known_resource_versions=held)
            events = await resumed.until_synced()
        assert named(events) == [(MODIFIED, "e3")]  # the one change, not the 20 it holds


async def test_a_restarted_replica_resumes_by_known_versions_and_its_history_starts_at_its_start(
    tmp_path: Path, etcd_settings: dict[str, Any]
) -> None:
    # README "Resuming a watch": on etcd a replica does not replay etcd's own history (measured: the
    # known-versions difference is far cheaper); a bare revision from before its start is OUT_OF_RANGE.
    async with running_server(tmp_path / "a", **etcd_settings) as a, Client(f"127.0.0.1:{a.port}") as client:
        held = await client.create_endpoint(endpoint("held"))
        since = held.metadata.resource_version
        changed = await client.update_endpoint(endpoint("held", labels={"v": "2"}))
    async with running_server(tmp_path / "a", **etcd_settings) as restarted, channel(restarted) as opened:
        start = restarted.cache.oldest_replayable
        assert start >= changed.metadata.resource_version
        error = await watch_endpoints(opened, resource_version=since).until_end()
        assert isinstance(error, OutOfRange)
        assert int(error.metadata["oldestResourceVersion"]) == start
        known = {"default/held": since}
        events = await watch_endpoints(opened, resource_version=since, known_resource_versions=known).until_synced()
        assert [(e.type, e.object.metadata.resource_version) for e in objects(events)] == [
            (MODIFIED, changed.metadata.resource_version)
        ]


async def test_a_replica_that_has_not_heard_of_an_object_yet_upserts_and_deletes_it_all_the_same(
    tmp_path: Path, etcd_settings: dict[str, Any]
) -> None:
    partition = WatchPartition()
    async with (
        running_server(tmp_path / "a", **etcd_settings) as a,
        partitioned_server(tmp_path / "b", etcd_settings, partition) as b,
        Client(f"127.0.0.1:{a.port}") as ca,
        Client(f"127.0.0.1:{b.port}") as cb,
    ):
        partition.cut()  # b falls behind: its cache knows nothing of what a creates now
        await ca.create_endpoint(endpoint("upserted"))
        await ca.create_endpoint(endpoint("deleted"))
        upsert = asyncio.create_task(cb.update_endpoint(endpoint("upserted", labels={"v": "2"}), allow_missing=True))
        delete = asyncio.create_task(cb.delete_endpoint("deleted", allow_missing=True))
        # Both are in b's hands, on a stale cache: b tries to create "upserted" (which etcd refuses,
        # the key exists) and deletes "deleted" without knowing its version ...
        key = f"{etcd_settings['etcd_prefix']}workloadendpoints/default/".encode()
        await partition.until_sent(lambda txn: Compare(key + b"upserted", "mod_revision", "==", 0) in txn.compares)
        deleted = await partition.until_sent(
            lambda txn: txn.result.succeeded and DeleteOp(key + b"deleted", prev_kv=True) in txn.success
        )
        assert not any(compare.key == key + b"deleted" for compare in deleted.compares)
        # ... and b's writes wait for b to catch up with what they did.
        assert b.store.current_revision < deleted.result.revision
        assert not upsert.done()
        assert not delete.done()
        partition.heal()
        updated = await upsert
        await delete
        assert updated.metadata.labels["v"] == "2"
        await a.cache.wait_for_revision(b.cache.revision, 5)
        assert (await ca.get_endpoint("upserted")).metadata.labels["v"] == "2"
        with pytest.raises(NotFound):
            await ca.get_endpoint("deleted")


async def test_the_client_fails_over_and_its_view_loses_nothing(tmp_path: Path, etcd_settings: dict[str, Any]) -> None:
    async with running_server(tmp_path / "b", **etcd_settings) as b:
        a = EpsyncServer(running_config(tmp_path / "a", etcd_settings))
        await a.start()
        try:
            async with Client([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as client:
                view = client.watch(backoff=Backoff(initial=0.02, maximum=0.2))
                iterator = view.__aiter__()
                await client.create_endpoint(endpoint("before"))
                await until(iterator, lambda: "default/before" in view.objects)
                await a.stop(grace=0)
                async with Client(f"127.0.0.1:{b.port}") as writer:
                    await writer.create_endpoint(endpoint("after"))
                await until(iterator, lambda: "default/after" in view.objects)
                assert set(view.objects) == {"default/before", "default/after"}
                assert view.reconnects >= 1
        finally:
            await a.stop(grace=0)


async def test_a_replica_killed_with_kill_9_its_watchers_move_and_resume(
    tmp_path: Path, etcd_settings: dict[str, Any]
) -> None:
    async with (
        serve_process(
            "--data-dir", str(tmp_path / "a"), "--datastore", "etcd",
            "--etcd-endpoints", etcd_settings["etcd_endpoints"][0], "--etcd-prefix", etcd_settings["etcd_prefix"],
        ) as a,
        running_server(tmp_path / "b", **etcd_settings) as b,
        Client([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as client,
    ):  # fmt: skip
        await wait_until_serving(a.port)
        view = client.watch(backoff=Backoff(initial=0.02, maximum=0.2))
        iterator = view.__aiter__()
        await until(iterator, lambda: view.synced)
        await client.create_endpoint(endpoint("one"))
        await until(iterator, lambda: "default/one" in view.objects)
        os.kill(a.process.pid, signal.SIGKILL)
        await a.process.wait()
        async with Client(f"127.0.0.1:{b.port}") as writer:
            await writer.create_endpoint(endpoint("two"))
            await writer.delete_endpoint("one")
        await until(iterator, lambda: set(view.objects) == {"default/two"})


async def test_etcd_down_keeps_watchers_and_reads_fails_writes_clearly_and_recovers(
    tmp_path: Path, etcd: EtcdServer
) -> None:
    settings = {"datastore": "etcd", "etcd_endpoints": (etcd.endpoint,), "etcd_prefix": "/epsync/v1/"}
    async with (
        running_server(tmp_path, **settings) as server,
        Client(f"127.0.0.1:{server.port}", timeout=10) as client,
        channel(server) as opened,
    ):
        await client.create_endpoint(endpoint("kept"))
        stream = watch_endpoints(opened, send_initial_events=True)
        await stream.until_synced()
        etcd.stop()
        await wait_for_health(server, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await client.get_endpoint("kept")).metadata.name == "kept"  # reads come from the cache
        with pytest.raises(Unavailable, match="etcd"):
            await client.create_endpoint(endpoint("refused"))
        assert not stream.closed  # the watch stream stays open through the outage
        etcd.start()
        await wait_for_health(server, health_pb2.HealthCheckResponse.SERVING)
        async with asyncio.timeout(20):
            while True:
                try:
                    await client.create_endpoint(endpoint("after"))
                    break
                except Unavailable:
                    await asyncio.sleep(0.1)  # paces the retries until the store takes writes again
        assert named(await stream.until_count(2, within=20)) == [(ADDED, "kept"), (ADDED, "after")]


async def test_etcd_compacted_past_the_cache_relists_and_watchers_get_only_the_difference(
    tmp_path: Path, etcd_settings: dict[str, Any], session_etcd: EtcdServer
) -> None:
    partition = WatchPartition()
    async with (
        partitioned_server(tmp_path, etcd_settings, partition) as server,
        Client(f"127.0.0.1:{server.port}") as client,
        channel(server) as opened,
    ):
        for name in ("same", "changed", "removed"):
            await client.create_endpoint(endpoint(name))
        stream = watch_endpoints(opened, send_initial_events=True)
        await stream.until_synced()
        assert isinstance(server.store, EtcdDatastore)
        partition.cut()  # this replica misses a stretch of etcd's history...
        key = f"{etcd_settings['etcd_prefix']}workloadendpoints/default/"
        async with EtcdClient(session_etcd.endpoint) as etcd:
            await etcd.put(key + "changed", stored_copy(await client.get_endpoint("changed"), labels={"v": "2"}))
            await etcd.delete_range(key + "removed")
            await etcd.put(key + "born", stored_copy(await client.get_endpoint("same"), name="born"))
            await etcd.put(key + "brief", stored_copy(await client.get_endpoint("same"), name="brief"))
            await etcd.delete_range(key + "brief")
            last = await etcd.put("/elsewhere", b"unrelated")
            await etcd.compact(last.revision, physical=True)  # ...and etcd forgets it
        partition.heal()
        events = objects(await stream.until_count(6, within=20))
        # Only the difference: nothing for "same", nothing for "brief", which came and went.
        assert sorted(named(events[3:])) == sorted([(MODIFIED, "changed"), (DELETED, "removed"), (ADDED, "born")])
        assert server.store.relists == 1
        # And nothing after it: a sentinel written now is the very next event.
        await client.create_endpoint(endpoint("sentinel"))
        assert named(objects(await stream.until_count(7))[6:]) == [(ADDED, "sentinel")]
        assert {wep.metadata.name async for wep in client.list_endpoints()} == {"same", "changed", "born", "sentinel"}


# --- helpers ---------------------------------------------------------------------------------------


def stored_copy(wep: WorkloadEndpoint, *, name: str = "", labels: dict[str, str] | None = None) -> bytes:
    """The bytes another writer would put into etcd: a stored endpoint, renamed or relabelled."""
    copy = WorkloadEndpoint()
    copy.CopyFrom(wep)
    copy.metadata.resource_version = 0
    if name:
        copy.metadata.name = name
        copy.metadata.uid = str(uuid.uuid4())
    if labels is not None:
        copy.metadata.labels.clear()
        copy.metadata.labels.update(labels)
    return copy.SerializeToString()


def running_config(data_dir: Path, settings: dict[str, Any]) -> ServerConfig:
    return server_config(data_dir, **settings)


async def until(iterator: AsyncIterator[Any], condition: Any, within: float = 20) -> None:
    """Drive a view's iteration until `condition()` holds."""
    async with asyncio.timeout(within):
        while not condition():
            await anext(iterator)


async def wait_until_serving(port: int) -> None:
    async with asyncio.timeout(20), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as opened:
        await opened.channel_ready()
        await health_becomes(opened, health_pb2.HealthCheckResponse.SERVING)


async def wait_for_health(server: EpsyncServer, status: int, within: float = 20) -> None:
    async with asyncio.timeout(within), channel(server) as opened:
        await health_becomes(opened, status)


async def health_becomes(opened: grpc.aio.Channel, status: int) -> None:
    """Follow the health service's own watch until it reports `status`."""
    call = health_pb2_grpc.HealthStub(opened).Watch(health_pb2.HealthCheckRequest())
    try:
        async for response in call:
            if response.status == status:
                return
    finally:
        call.cancel()
