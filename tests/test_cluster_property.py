"""SPEC §6.1 across replicas: watchers that hop between two epsync replicas on one etcd, while
writes go through both, each end up with exactly the endpoints that match them. The same holds
between the owner and a worker of `epsync serve --workers 2` (the worker's store is the owner's,
over a real Unix socket; both run in this process here, tests/test_workers.py runs them as the
command does).

The histories and the reference model are those of tests/test_watch_property.py. Here every write
is sent to one replica or the other, and a Hop cuts a watcher off on the replica it is on (as a
replica going away would) and sends it to the other one, where it resumes with what it holds: the
revision it has seen everything up to, and the versions of the objects it has. The other replica
may not have reached that revision yet, and must make the watcher wait rather than lose anything.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync.client import Client
from epsync.client.view import Backoff, MaterializedView, WatchEvent, grpc_stream
from epsync.errors import Unavailable
from epsync.internal.v1.store_pb2_grpc import add_StoreServiceServicer_to_server
from epsync.server.app import EpsyncServer
from epsync.store.base import Change, Datastore
from epsync.store.etcd import EtcdDatastore
from epsync.store.remote import RemoteDatastore, StoreService
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as wep_grpc
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.conftest import server_config
from tests.etcd_fixture import EtcdServer, WatchPartition, unique_prefix
from tests.selector_reference import render
from tests.test_watch_property import (
    DELETE_ENDPOINT,
    UPSERT_ENDPOINT,
    WATCHERS,
    DeleteEndpoint,
    DeleteProfile,
    UpsertEndpoint,
    UpsertProfile,
    WatcherSpec,
    apply_edit,
    check_order,
    expected_view,
)


class Partition(Protocol):
    """Holds a replica's feed back (cut) and lets it catch up (heal)."""

    def cut(self) -> None: ...
    def heal(self) -> None: ...


Edit = UpsertEndpoint | DeleteEndpoint | UpsertProfile | DeleteProfile
EDITS: st.SearchStrategy[Edit] = st.one_of(
    UPSERT_ENDPOINT,
    UPSERT_ENDPOINT,
    DELETE_ENDPOINT,
    st.builds(UpsertProfile, st.sampled_from(("p1", "p2")), st.dictionaries(st.just("app"), st.just("a"))),
    st.builds(DeleteProfile, st.sampled_from(("p1", "p2"))),
)


@dataclass(frozen=True)
class Via:
    """An edit sent to replica `replica`."""

    edit: Edit
    replica: int


@dataclass(frozen=True)
class Hop:
    """Watcher `which` is cut off where it is and resumes on the other replica."""

    which: int


@dataclass(frozen=True)
class Lag:
    """Replica `replica` stops following etcd (or, if it had, catches up): it falls behind the
    other, so watchers that hop to it arrive with revisions it has not seen yet. Writes meant for
    a lagging replica go to the other (a lagging replica's own writes would wait for it)."""

    replica: int


Op = Via | Hop | Lag
OPS: st.SearchStrategy[Op] = st.one_of(
    st.builds(Via, EDITS, st.integers(0, 1)),
    st.builds(Via, EDITS, st.integers(0, 1)),
    st.builds(Via, EDITS, st.integers(0, 1)),
    st.builds(Hop, st.integers(0, 20)),
    st.builds(Hop, st.integers(0, 20)),
    st.builds(Lag, st.integers(0, 1)),
)


class HoppingWatcher:
    """A materialised view whose stream goes to whichever replica the watcher is on at the moment.

    A hop takes effect at the next response (bookmarks come every 50 ms): the stream to the old
    replica is closed there, as if the connection broke, and the view resumes on the new one.
    """

    def __init__(self, spec: WatcherSpec, channels: list[grpc.aio.Channel], start: int) -> None:
        self.on = start
        self._streams = [grpc_stream(wep_grpc.WorkloadEndpointServiceStub(c).WatchWorkloadEndpoints) for c in channels]
        request = wep_pb.WatchWorkloadEndpointsRequest(
            namespace=spec.namespace,
            node=spec.node,
            label_selector=render(spec.selector),
            send_initial_events=True,
            allow_bookmarks=True,
        )
        self.view: MaterializedView[WorkloadEndpoint, wep_pb.WatchWorkloadEndpointsRequest] = MaterializedView(
            self._open, request, lambda wep: f"{wep.metadata.namespace}/{wep.metadata.name}", backoff=FAST
        )
        self.seen: list[WatchEvent[WorkloadEndpoint]] = []
        self.left = asyncio.Event()  # set when the stream to the old replica is closed
        self._moved = asyncio.Event()  # set when the watcher moves away from the current stream's replica

    async def _open(
        self, request: wep_pb.WatchWorkloadEndpointsRequest
    ) -> AsyncIterator[wep_pb.WatchWorkloadEndpointsResponse]:
        replica = self.on
        moved = self._moved = asyncio.Event()
        self.left.set()  # a stream opens only once the last one has closed
        responses = self._streams[replica](request)
        try:
            while True:
                # A hop may come while the replica sends nothing (it may be waiting to catch up).
                response = asyncio.ensure_future(anext(responses))
                hopped = asyncio.ensure_future(moved.wait())
                await asyncio.wait({response, hopped}, return_when=asyncio.FIRST_COMPLETED)
                hopped.cancel()
                if not response.done():
                    response.cancel()
                    await asyncio.wait({response})  # the generator must stop before it can be closed
                    raise Unavailable("the watcher moved to the other replica (test)", reason="TEST")
                try:
                    yield response.result()
                except StopAsyncIteration:
                    return
        finally:
            if isinstance(responses, AsyncGenerator):
                await responses.aclose()  # ends the call to the old replica now, not at garbage collection

    async def hop(self) -> None:
        """Move, and return once the old stream is closed; the resume races with the writes that follow."""
        self.left.clear()
        self.on = 1 - self.on
        self._moved.set()
        async with asyncio.timeout(5):
            await self.left.wait()

    async def run(self) -> None:
        async for event in self.view:
            self.seen.append(event)


FAST = Backoff(initial=0.01, maximum=0.1)


async def run_history(ops: list[Op], specs: list[WatcherSpec], etcd: EtcdServer, data_dir: Path) -> None:
    prefix = unique_prefix()
    partitions = [WatchPartition(), WatchPartition()]
    replicas = []
    for name, partition in zip(("a", "b"), partitions, strict=True):
        config = server_config(
            data_dir / name,
            datastore="etcd",
            etcd_endpoints=(etcd.endpoint,),
            etcd_prefix=prefix,
            watcher_max_events=8,
            bookmark_interval_seconds=0.05,
            bookmark_tick_seconds=0.02,
        )
        store = EtcdDatastore(config.etcd_endpoints, prefix=config.etcd_prefix, connect=partition.connect)
        replicas.append(EpsyncServer(config, store=store))
    async with AsyncExitStack() as stack:
        for replica in replicas:
            await replica.start()
            stack.push_async_callback(replica.stop, 0)
        clients = [
            await stack.enter_async_context(Client(f"127.0.0.1:{replica.port}", timeout=10)) for replica in replicas
        ]
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}"))
            for replica in replicas
        ]
        await watch_history(ops, specs, replicas, partitions, clients, channels)


class FeedPause(StoreService):
    """The owner's store service, whose feed to the worker can be held back (a Lag of the worker)."""

    def __init__(self, store: Datastore) -> None:
        super().__init__(store)
        self._held: list[list[Change]] | None = None

    def publish_changes(self, changes: Sequence[Change]) -> None:
        if self._held is not None:
            self._held.append(list(changes))
        else:
            super().publish_changes(changes)

    def cut(self) -> None:
        self._held = []

    def heal(self) -> None:
        held, self._held = self._held or [], None
        for changes in held:
            super().publish_changes(changes)


class OwnerCannotLag:
    """The owner is where the changes come from: it never lags (a Lag of it is a no-op)."""

    def cut(self) -> None:
        pass

    def heal(self) -> None:
        pass


async def run_worker_history(ops: list[Op], specs: list[WatcherSpec], data_dir: Path) -> None:
    settings = {"watcher_max_events": 8, "bookmark_interval_seconds": 0.05, "bookmark_tick_seconds": 0.02}
    owner = EpsyncServer(server_config(data_dir / "owner", **settings))
    socket_dir = Path(tempfile.mkdtemp(prefix="epsync-owner-"))  # Unix socket paths are short
    async with AsyncExitStack() as stack:
        await owner.start()
        stack.push_async_callback(owner.stop, 0)
        feed = FeedPause(owner.store)
        service = grpc.aio.server()
        add_StoreServiceServicer_to_server(feed, service)
        service.add_insecure_port(f"unix:{socket_dir / 'store.sock'}")
        await service.start()
        stack.push_async_callback(service.stop, 0)
        worker = EpsyncServer(
            server_config(data_dir / "worker", **settings), store=RemoteDatastore(socket_dir / "store.sock")
        )
        await worker.start()
        stack.push_async_callback(worker.stop, 0)
        replicas = [owner, worker]
        clients = [
            await stack.enter_async_context(Client(f"127.0.0.1:{replica.port}", timeout=10)) for replica in replicas
        ]
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}"))
            for replica in replicas
        ]
        await watch_history(ops, specs, replicas, [OwnerCannotLag(), feed], clients, channels)


async def watch_history(
    ops: list[Op],
    specs: list[WatcherSpec],
    replicas: list[EpsyncServer],
    partitions: Sequence[Partition],
    clients: list[Client],
    channels: list[grpc.aio.Channel],
) -> None:
    endpoints: dict[str, WorkloadEndpoint] = {}
    profiles: dict[str, Profile] = {}
    watchers = [HoppingWatcher(spec, channels, start=i % 2) for i, spec in enumerate(specs)]
    tasks = [asyncio.create_task(watcher.run()) for watcher in watchers]
    lagging: set[int] = set()
    try:
        for op in ops:
            match op:
                case Via(edit, replica):
                    await apply_edit(edit, clients[1 - replica if replica in lagging else replica], endpoints, profiles)
                case Hop(which):
                    await watchers[which % len(watchers)].hop()
                case Lag(replica) if replica in lagging:
                    lagging.discard(replica)
                    partitions[replica].heal()
                case Lag(replica) if not lagging:
                    lagging.add(replica)
                    partitions[replica].cut()
            await asyncio.sleep(0)  # lets the watchers' tasks take a step between operations; decides nothing
        for replica in lagging:
            partitions[replica].heal()
        final = max(replica.store.current_revision for replica in replicas)
        async with asyncio.timeout(30):
            # Polled: "every view has reached the final revision" is no single event to wait on.
            while not all(w.view.synced and w.view.revision >= final for w in watchers):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        for spec, watcher in zip(specs, watchers, strict=True):
            assert watcher.view.objects == expected_view(spec, endpoints, profiles), (spec, render(spec.selector))
            check_order(watcher.seen)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=10, max_size=40), specs=st.lists(WATCHERS, min_size=1, max_size=4))
def test_watchers_hopping_between_replicas_hold_exactly_their_matching_endpoints(
    session_etcd: EtcdServer, ops: list[Op], specs: list[WatcherSpec]
) -> None:
    with tempfile.TemporaryDirectory(prefix="epsync-cluster-property-") as tmp:
        asyncio.run(run_history(ops, specs, session_etcd, Path(tmp)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OPS, min_size=10, max_size=40), specs=st.lists(WATCHERS, min_size=1, max_size=4))
def test_watchers_hopping_between_owner_and_worker_hold_exactly_their_matching_endpoints(
    ops: list[Op], specs: list[WatcherSpec]
) -> None:
    with tempfile.TemporaryDirectory(prefix="epsync-workers-property-") as tmp:
        asyncio.run(run_worker_history(ops, specs, Path(tmp)))
