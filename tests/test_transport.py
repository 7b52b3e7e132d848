"""The gRPC transports as clients meet them (`--transport rust`, the default, and `grpcio`): the API answers
the same on either, and the Rust transport answers what grpc.aio would where the call never reaches a handler
(an unknown method, a request too large, a compressed one, a deadline, a client that leaves)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest

from epsync.client import Client
from epsync.errors import EpsyncError
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from tests.factories import endpoint
from tests.watch_streams import channel, named, running_server, watch_endpoints

pytestmark = pytest.mark.timeout(60)

TRANSPORTS = ("rust", "grpcio")


def _error(error: EpsyncError) -> tuple[str, str, str | None, dict[str, str]]:
    return (error.code.name, str(error), error.reason, dict(error.metadata))


async def _session(server: EpsyncServer) -> dict[str, Any]:
    """What a client sees of one scripted session: answers, errors with their details, events, write results."""
    seen: dict[str, Any] = {}
    async with Client(f"127.0.0.1:{server.port}") as client, channel(server) as opened:
        stream = watch_endpoints(opened, namespace="default")
        await stream.until_synced()
        created = await client.create_endpoint(endpoint("a"))
        seen["created"] = (created.metadata.name, created.metadata.resource_version)
        with pytest.raises(EpsyncError) as exists:
            await client.create_endpoint(endpoint("a"))
        seen["exists"] = _error(exists.value)
        with pytest.raises(EpsyncError) as missing:
            await client.get_endpoint("nope")
        seen["missing"] = _error(missing.value)
        bad = endpoint("bad")
        bad.spec.ip_networks.append("not an address")
        with pytest.raises(EpsyncError) as invalid:
            await client.create_endpoint(bad)
        seen["invalid"] = _error(invalid.value)
        writes = [
            pb.WriteWorkloadEndpointsRequest(
                request_id=name, create=pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint(name))
            )
            for name in ("b", "a", "c")
        ]
        answers = [answer async for answer in client.write_endpoints(writes)]
        seen["stream"] = [(answer.request_id, answer.status.code, answer.status.message) for answer in answers]
        await client.delete_endpoint("b")
        events = await stream.read_until(lambda events: len(named(events)) >= 4)
        seen["events"] = named(events)
        seen["listed"] = sorted([e.metadata.name async for e in client.list_endpoints()])
    return seen


async def test_the_api_answers_the_same_on_either_transport(tmp_path: Path) -> None:
    sessions = {}
    for transport in TRANSPORTS:
        async with running_server(tmp_path / transport, transport=transport) as server:
            sessions[transport] = await _session(server)
    assert sessions["rust"] == sessions["grpcio"]
    assert sessions["rust"]["exists"][0] == "ALREADY_EXISTS"
    assert sessions["rust"]["invalid"][0] == "INVALID_ARGUMENT"
    assert [code for _, code, _ in sessions["rust"]["stream"]] == [0, 6, 0]  # OK, ALREADY_EXISTS, OK


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unknown_method_is_unimplemented(tmp_path: Path, transport: str) -> None:
    async with running_server(tmp_path, transport=transport) as server, channel(server) as opened:
        nope = opened.unary_unary("/epsync.v1.WorkloadEndpointService/Nope", None, None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await nope(b"")
        assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_request_past_the_message_limit_is_refused_and_the_connection_goes_on(
    tmp_path: Path, transport: str
) -> None:
    async with (
        running_server(tmp_path, transport=transport, max_message_bytes=64 * 1024) as server,
        channel(server) as opened,
    ):
        stub = pb_grpc.WorkloadEndpointServiceStub(opened)
        big = endpoint("big", labels={"k": "v" * 100_000})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateWorkloadEndpoint(pb.CreateWorkloadEndpointRequest(workload_endpoint=big))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        small = pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint("a"))
        assert (await stub.CreateWorkloadEndpoint(small)).workload_endpoint.metadata.name == "a"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_gzip_compressed_requests_are_read(tmp_path: Path, transport: str) -> None:
    async with (
        running_server(tmp_path, transport=transport) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", compression=grpc.Compression.Gzip) as opened,
    ):
        stub = pb_grpc.WorkloadEndpointServiceStub(opened)
        labels = {f"key{i}": "value" * 12 for i in range(50)}  # compresses well: a real gzip stream, not a stored one
        answer = await stub.CreateWorkloadEndpoint(
            pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint("zipped", labels=labels))
        )
        assert dict(answer.workload_endpoint.metadata.labels).items() >= labels.items()


async def _until(condition: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (the server's state has no event to wait on)
            await asyncio.sleep(0.02)


async def test_a_deadline_that_passes_cancels_the_handler(tmp_path: Path) -> None:
    # A read for a revision the server has not reached waits up to min_revision_wait_seconds for it.
    async with running_server(tmp_path, min_revision_wait_seconds=30) as server, channel(server) as opened:
        stub = pb_grpc.WorkloadEndpointServiceStub(opened)
        waiting = pb.GetWorkloadEndpointRequest(namespace="default", name="a", min_resource_version=10**9)
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.GetWorkloadEndpoint(waiting, timeout=0.3)
        assert late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await _until(lambda: server.calls_in_progress == 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_that_cancels_its_watch_ends_the_watcher(tmp_path: Path, transport: str) -> None:
    async with running_server(tmp_path, transport=transport) as server, channel(server) as opened:
        stream = watch_endpoints(opened)
        await stream.until_synced()
        assert server.endpoint_hub.watcher_count == 1
        stream.call.cancel()
        await _until(lambda: server.endpoint_hub.watcher_count == 0)


async def test_bytes_that_are_not_http2_close_only_their_connection(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        # Whatever the server says first (a GOAWAY), it closes the connection, with a reset when the client's
        # bytes are left unread.
        async with asyncio.timeout(5):
            with contextlib.suppress(ConnectionResetError):
                while await reader.read(4096):
                    pass
        writer.close()
        async with Client(f"127.0.0.1:{server.port}") as client:
            assert (await client.create_endpoint(endpoint("a"))).metadata.name == "a"


async def test_the_transport_binds_every_address_a_name_resolves_to(tmp_path: Path) -> None:
    async with running_server(tmp_path, listen="localhost:0") as server:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo("localhost", server.port, type=socket.SOCK_STREAM)}
        for host in resolved:
            _, writer = await asyncio.open_connection(host, server.port)
            writer.close()
