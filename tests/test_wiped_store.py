"""A client that holds state from a store that is gone (a wiped data directory) re-lists from the new
one instead of waiting for ever for revisions the new store has not reached (SPEC §7, store identity)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import grpc
import pytest

from epsync.client import Client
from epsync.client.view import Backoff, WatchEvent
from epsync.errors import OutOfRange, rpc_error
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.conftest import free_port, serve_process
from tests.factories import endpoint


async def test_a_view_from_a_wiped_store_starts_over_on_the_new_one(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    args = ("--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--workers", "1")
    seen: list[WatchEvent[WorkloadEndpoint]] = []
    async with Client(f"127.0.0.1:{port}", timeout=10) as watching:
        view = watching.watch(backoff=Backoff(initial=0.05, maximum=0.2))

        async def run() -> None:
            async for event in view:
                seen.append(event)

        task = asyncio.create_task(run())
        try:
            async with serve_process(*args), Client(f"127.0.0.1:{port}") as client:
                for i in range(5):  # revisions 1..5, and more in the old store than the new one will have
                    await client.update_endpoint(endpoint(f"old-{i}"), allow_missing=True)
                async with asyncio.timeout(10):
                    while len(view.objects) != 5:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                old_store = view.store_id
                assert len(old_store) == 32
            shutil.rmtree(data)  # wiped
            async with serve_process(*args), Client(f"127.0.0.1:{port}") as client:
                new = await client.create_endpoint(endpoint("new"))  # revision 1 again
                async with asyncio.timeout(15):
                    while set(view.objects) != {"default/new"} or not view.synced:  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
                assert view.objects["default/new"] == new
                assert view.store_id not in ("", old_store)
                deleted = {e.object.metadata.name for e in seen if e.type == "DELETED" and e.object is not None}
                assert deleted == {f"old-{i}" for i in range(5)}  # the consumer was told
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_resume_naming_another_store_is_resource_version_too_old(tmp_path: Path) -> None:
    async with (
        serve_process("--data-dir", str(tmp_path / "data")) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = pb_grpc.WorkloadEndpointServiceStub(channel)
        request = pb.WatchWorkloadEndpointsRequest(resource_version=1, store_id="0" * 32)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.WatchWorkloadEndpoints(request, timeout=10):
                pass
        error = rpc_error(raised.value)
        assert isinstance(error, OutOfRange)
        assert error.reason == "RESOURCE_VERSION_TOO_OLD"
        assert "another store" in error.message
        assert len(error.metadata["storeId"]) == 32
        # Its own store id is accepted.
        first = stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True))
        async for response in first:
            own = next(e.store_id for e in response.events if e.initial_events_end)
            break
        first.cancel()
        resumed = stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(resource_version=0, store_id=own))
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(0.5):
                async for _ in resumed:
                    break
        resumed.cancel()
