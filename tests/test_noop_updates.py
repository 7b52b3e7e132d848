"""SPEC §5: an update that would store identical content changes nothing.

No new resource_version, no commit, no event; the caller gets the stored object. Unary Update
(also as `apply`'s upsert) and the write stream alike, on both datastores. The decision is made
against the datastore, not a cache that may be behind: on etcd another replica may have changed
the object meanwhile, and the update must then be written, not dropped.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from epsync.client import Client
from epsync.errors import Aborted
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1.watch_pb2 import MODIFIED
from tests.etcd_fixture import WatchPartition
from tests.factories import endpoint, profile
from tests.test_cluster import etcd_settings, partitioned_server  # noqa: F401 - etcd_settings is a fixture
from tests.watch_streams import channel, named, objects, running_server, watch_endpoints, watch_profiles

OK = 0


async def test_an_identical_update_keeps_the_revision_and_sends_no_event(server: EpsyncServer, client: Client) -> None:
    created = await client.create_endpoint(endpoint("a", labels={"app": "web", "tier": "1"}))
    revision = server.store.current_revision
    async with channel(server) as opened:
        stream = watch_endpoints(opened, resource_version=revision)
        await stream.until_synced()
        # The same content, labels in another order, with and without its own resource_version as precondition.
        same = await client.update_endpoint(endpoint("a", labels={"tier": "1", "app": "web"}))
        pinned = endpoint("a", labels={"app": "web", "tier": "1"})
        pinned.metadata.resource_version = created.metadata.resource_version
        same_pinned = await client.update_endpoint(pinned)
        applied = await client.update_endpoint(endpoint("a", labels={"app": "web", "tier": "1"}), allow_missing=True)
        assert same == same_pinned == applied == created
        assert server.store.current_revision == server.cache.revision == revision
        # The next event the watcher gets is the next real change.
        changed = await client.update_endpoint(endpoint("a", labels={"app": "db"}))
        events = await stream.until_count(1)
    assert changed.metadata.resource_version > revision
    assert [(e.type, e.resource_version) for e in objects(events)] == [(MODIFIED, changed.metadata.resource_version)]


async def test_an_identical_profile_update_keeps_the_revision_and_sends_no_event(
    server: EpsyncServer, client: Client
) -> None:
    created = await client.create_profile(profile("p", {"app": "web"}))
    await client.create_endpoint(endpoint("a", profiles=["p"]))
    revision = server.store.current_revision
    async with channel(server) as opened:
        profiles = watch_profiles(opened, resource_version=revision)
        endpoints = watch_endpoints(opened, label_selector="app == 'web'", resource_version=revision)
        await profiles.until_synced()
        await endpoints.until_synced()
        assert await client.update_profile(profile("p", {"app": "web"})) == created
        assert server.store.current_revision == revision
        changed = await client.update_profile(profile("p", {"app": "db"}))
        assert [(e.type, e.resource_version) for e in objects(await profiles.until_count(1))] == [
            (MODIFIED, changed.metadata.resource_version)
        ]
        assert named(await endpoints.until_count(1)) == [(3, "a")]  # DELETED: it no longer matches


async def test_an_identical_update_with_a_stale_precondition_is_still_aborted(
    server: EpsyncServer, client: Client
) -> None:
    created = await client.create_endpoint(endpoint("a"))
    current = await client.update_endpoint(endpoint("a", labels={"v": "2"}))
    stale = endpoint("a", labels={"v": "2"})  # identical to what is stored, pinned to an older version
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(Aborted, match=f"is at resource_version {current.metadata.resource_version}"):
        await client.update_endpoint(stale)
    assert await client.get_endpoint("a") == current


async def test_identical_updates_on_the_write_stream_change_nothing_and_answer_the_stored_object(
    server: EpsyncServer, client: Client
) -> None:
    created = await client.create_endpoint(endpoint("a", labels={"app": "web"}))
    revision = server.store.current_revision

    def update(request_id: str, labels: dict[str, str]) -> wep_pb.WriteWorkloadEndpointsRequest:
        return wep_pb.WriteWorkloadEndpointsRequest(
            request_id=request_id,
            update=wep_pb.UpdateWorkloadEndpointRequest(workload_endpoint=endpoint("a", labels=labels)),
        )

    async with channel(server) as opened:
        stream = watch_endpoints(opened, resource_version=revision)
        await stream.until_synced()
        requests = [update("same-1", {"app": "web"}), update("same-2", {"app": "web"}), update("new", {"app": "db"})]
        requests.append(update("same-3", {"app": "db"}))
        responses = [r async for r in client.write_endpoints(requests)]
        events = await stream.until_count(1)
        await asyncio.sleep(0.2)  # any event the no-ops caused would have come by now
        assert len(objects(stream.events)) == 1
    assert [r.status.code for r in responses] == [OK] * 4
    same_1, same_2, new, same_3 = responses
    assert same_1.workload_endpoint == same_2.workload_endpoint == created
    assert same_1.resource_version == same_2.resource_version == revision
    assert new.resource_version > revision
    assert same_3.resource_version == new.resource_version
    assert same_3.workload_endpoint == new.workload_endpoint
    assert [(e.type, e.resource_version) for e in objects(events)] == [(MODIFIED, new.resource_version)]
    assert server.store.current_revision == new.resource_version


async def test_a_replica_behind_writes_an_update_its_cache_took_for_a_no_op(
    tmp_path: Path,
    etcd_settings: dict[str, Any],  # noqa: F811 - the fixture
) -> None:
    partition = WatchPartition()
    async with (
        running_server(tmp_path / "a", **etcd_settings) as a,
        partitioned_server(tmp_path / "b", etcd_settings, partition) as b,
        Client(f"127.0.0.1:{a.port}") as ca,
        Client(f"127.0.0.1:{b.port}") as cb,
    ):
        first = await ca.create_endpoint(endpoint("x", labels={"v": "1"}))
        await b.cache.wait_for_revision(first.metadata.resource_version, 5)
        partition.cut()  # b falls behind: it has not heard of the change a makes now
        theirs = await ca.update_endpoint(endpoint("x", labels={"v": "2"}))
        async with channel(a) as opened:
            stream = watch_endpoints(opened, resource_version=theirs.metadata.resource_version)
            await stream.until_synced()
            # b's cache still holds v=1, so to b this looks like a no-op; it is not: the store holds v=2.
            ours = asyncio.create_task(cb.update_endpoint(endpoint("x", labels={"v": "1"})))
            await asyncio.sleep(0.3)
            partition.heal()  # b hears of its own write once it catches up
            written = await ours
            events = await stream.until_count(1)
        assert written.metadata.resource_version > theirs.metadata.resource_version
        assert written.metadata.labels["v"] == "1"
        assert [(e.type, e.resource_version, e.object.metadata.labels["v"]) for e in objects(events)] == [
            (MODIFIED, written.metadata.resource_version, "1")
        ]
        assert await ca.get_endpoint("x") == written
