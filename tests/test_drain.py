"""Graceful drain (SPEC §8): on shutdown, health first, then no new writes (UNAVAILABLE SHUTTING_DOWN) while
the queued ones commit, and watch streams ended with SHUTTING_DOWN spread over the grace period rather than
all at once; and connections that reach --max-connection-age are closed so clients rebalance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from tests.conftest import server_config
from tests.factories import endpoint

pytestmark = pytest.mark.timeout(60)

OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(rpc_status.from_call(error))  # type: ignore[arg-type]


async def _watch_until_it_ends(
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub, opened: asyncio.Event
) -> tuple[float, str]:
    """Open a watch, signal once it is in sync, read until it ends; when it ended and its reason."""
    call = stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True, allow_bookmarks=True))
    await call.read()
    opened.set()
    try:
        while isinstance(await call.read(), pb.WatchWorkloadEndpointsResponse):
            pass
    except grpc.aio.AioRpcError as error:
        return time.monotonic(), f"{error.code().name} {_reason(error)}"
    return time.monotonic(), "ended without a status"


async def test_shutdown_ends_watchers_spread_over_the_grace_period(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data"))
    await server.start()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) for _ in range(20)]
    try:
        opened = [asyncio.Event() for _ in channels]
        watches = [
            asyncio.create_task(_watch_until_it_ends(pb_grpc.WorkloadEndpointServiceStub(channel), event))
            for channel, event in zip(channels, opened, strict=True)
        ]
        await asyncio.gather(*(event.wait() for event in opened))
        started = time.monotonic()
        await server.stop(grace=2.0)
        ended = sorted(await asyncio.gather(*watches))
    finally:
        for channel in channels:
            await channel.close(grace=None)
    assert all(reason.startswith("UNAVAILABLE") and "SHUTTING_DOWN" in reason for _, reason in ended), ended
    first, last = ended[0][0] - started, ended[-1][0] - started
    # Spread over 80% of the grace period (1.6 s): not one stampede at the start.
    assert last - first > 1.0, f"the streams ended between {first:.2f} s and {last:.2f} s"
    assert last < 2.5


async def _watch_until_it_ends_after(call: Any) -> tuple[str, float]:
    """Read an open watch until it ends: its status and when."""
    try:
        while isinstance(await call.read(), pb.WatchWorkloadEndpointsResponse):
            pass
    except grpc.aio.AioRpcError as error:
        return error.code().name, time.monotonic()
    return "ended without a status", time.monotonic()


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    """The error `call` (an awaitable RPC, or a watch whose first response is read) fails with."""
    try:
        await (call.read() if hasattr(call, "read") else call)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call was served")


async def test_a_draining_server_takes_no_new_writes_or_watches(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data"))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) as channel:
        stub = pb_grpc.WorkloadEndpointServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        # Ten watches held open: the drain ends them over 80% of the grace period, and serves meanwhile.
        held = [
            stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True)) for _ in range(10)
        ]
        for call in held:
            await call.read()
        writes: asyncio.Queue[pb.WriteWorkloadEndpointsRequest | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.WriteWorkloadEndpointsRequest]:
            while (request := await writes.get()) is not None:
                yield request

        stream = stub.WriteWorkloadEndpoints(requests())
        create = pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint("before"))
        await writes.put(pb.WriteWorkloadEndpointsRequest(request_id="before", create=create))
        first: Any = await stream.read()
        assert first.status.code == 0

        stopping = asyncio.create_task(server.stop(grace=3.0))
        await asyncio.sleep(0.2)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        create = pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint("late"))
        await writes.put(pb.WriteWorkloadEndpointsRequest(request_id="late", create=create))
        late: Any = await stream.read()
        assert late.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "shutting down" in late.status.message
        refused = await _refusal(stub.CreateWorkloadEndpoint(create))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "SHUTTING_DOWN" in _reason(refused)
        refused = await _refusal(
            stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True))
        )
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "SHUTTING_DOWN" in _reason(refused)
        await writes.put(None)
        for call in held:
            call.cancel()
        await stopping


async def test_connections_are_closed_at_their_maximum_age(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", max_connection_age_seconds=0.5, grace_seconds=0.3))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) as channel:
            stub = pb_grpc.WorkloadEndpointServiceStub(channel)
            watch = stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True))
            await watch.read()
            started = time.monotonic()
            ended, _ = await _watch_until_it_ends_after(watch)
            assert ended.startswith("UNAVAILABLE"), ended
            assert time.monotonic() - started < 5
            # The channel connects again for the next call.
            await stub.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=5)
    finally:
        await server.stop(grace=0.1)
