"""Reading watch streams in tests as a node agent reads them: response by response, event by event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from epsync.errors import EpsyncError, rpc_error
from epsync.server.app import EpsyncServer
from epsync.server.config import ServerConfig
from epsync.v1 import profile_service_pb2 as profile_pb
from epsync.v1 import profile_service_pb2_grpc as profile_grpc
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as wep_grpc
from epsync.v1.watch_pb2 import BOOKMARK
from tests.conftest import server_config

Event = wep_pb.WorkloadEndpointWatchEvent | profile_pb.ProfileWatchEvent


@dataclass
class Stream:
    """One open watch call; `events` grows as responses are read."""

    call: Any
    responses: list[Any] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    error: EpsyncError | None = None
    closed: bool = False

    async def read_until(self, done: Callable[[list[Event]], bool], within: float = 5.0) -> list[Event]:
        """Read responses until `done(self.events)` holds; the stream's error (if it ends) is kept."""
        async with asyncio.timeout(within):
            while not done(self.events):
                if self.closed:
                    raise AssertionError(f"stream ended ({self.error}) before the condition held: {self.summary()}")
                try:
                    response = await self.call.read()
                except grpc.aio.AioRpcError as error:
                    self.error, self.closed = rpc_error(error), True
                    continue
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing from grpc-stubs
                    self.closed = True
                    continue
                self.responses.append(response)
                self.events.extend(response.events)
        return self.events

    async def until_synced(self, within: float = 5.0) -> list[Event]:
        return await self.read_until(lambda events: any(e.initial_events_end for e in events), within)

    async def until_count(self, count: int, within: float = 5.0) -> list[Event]:
        """Until `count` object events (bookmarks not counted) have arrived."""
        return await self.read_until(lambda events: len(objects(events)) >= count, within)

    async def until_end(self, within: float = 5.0) -> EpsyncError | None:
        await self.read_until(lambda _: self.closed, within)
        return self.error

    def summary(self) -> list[tuple[int, str, int]]:
        return [(e.type, e.object.metadata.name, e.resource_version) for e in self.events]


def objects(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type != BOOKMARK]


def named(events: list[Event]) -> list[tuple[int, str]]:
    """(type, name) of the object events, in order."""
    return [(e.type, e.object.metadata.name) for e in objects(events)]


@asynccontextmanager
async def channel(server: EpsyncServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


def watch_endpoints(opened: grpc.aio.Channel, **request: Any) -> Stream:
    stub = wep_grpc.WorkloadEndpointServiceStub(opened)
    return Stream(stub.WatchWorkloadEndpoints(wep_pb.WatchWorkloadEndpointsRequest(**request)))


def watch_profiles(opened: grpc.aio.Channel, **request: Any) -> Stream:
    stub = profile_grpc.ProfileServiceStub(opened)
    return Stream(stub.WatchProfiles(profile_pb.WatchProfilesRequest(**request)))


def known_versions(objects_by_key: Mapping[str, Any]) -> dict[str, int]:
    return {key: obj.metadata.resource_version for key, obj in objects_by_key.items()}


@asynccontextmanager
async def running_server(data_dir: Path, **overrides: Any) -> AsyncIterator[EpsyncServer]:
    """A server with its own config (for limits and timings a test is about)."""
    config: ServerConfig = server_config(data_dir, **overrides)
    instance = EpsyncServer(config)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop(grace=0.1)
