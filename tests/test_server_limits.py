"""Limits on what clients may hold (SPEC §8): watch streams in all and per identity (TOO_MANY_WATCHERS with
a RetryInfo), connections, streams per connection, and connections that never finish their handshake."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from epsync.errors import ResourceExhausted
from epsync.server.admission import RateLimiter
from epsync.server.app import EpsyncServer
from epsync.server.identity import Identity, Role
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from tests.certs import Authority
from tests.conftest import server_config

pytestmark = pytest.mark.timeout(60)

OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **overrides: Any) -> AsyncIterator[EpsyncServer]:
    server = EpsyncServer(server_config(tmp_path / "data", **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


async def _open_watch(channel: grpc.aio.Channel, node: str = "node1") -> Any:
    """A watch whose first response (the initial_events_end bookmark) has arrived; raises its failure."""
    call = pb_grpc.WorkloadEndpointServiceStub(channel).WatchWorkloadEndpoints(
        pb.WatchWorkloadEndpointsRequest(node=node, send_initial_events=True)
    )
    await call.read()
    return call


def _retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToNanoseconds()) / 1e9
    return None


async def test_watchers_past_the_limit_are_told_to_retry_later(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, max_watchers=3) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) as channel,
    ):
        held = [await _open_watch(channel) for _ in range(3)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _open_watch(channel)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "TOO_MANY_WATCHERS" in str(rpc_status.from_call(refused.value))  # type: ignore[arg-type]
        assert "--max-watchers" in (refused.value.details() or "")
        assert _retry_delay(refused.value) == 5.0
        held[0].cancel()
        for _ in range(50):  # the server notices the cancel
            with contextlib.suppress(grpc.aio.AioRpcError):
                held[0] = await _open_watch(channel)
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("a watch could not open after one closed")
        for call in held:
            call.cancel()


async def test_watchers_per_identity(tmp_path: Path) -> None:
    ca = Authority()
    cert, key = ca.issue("server", server=True).write(tmp_path / "server", "server")
    ca_file = ca.write(tmp_path / "server")
    async with serving(
        tmp_path, tls_cert_file=cert, tls_key_file=key, client_ca_file=ca_file, max_watchers_per_identity=2
    ) as server:

        def channel(who: str) -> grpc.aio.Channel:
            issued = ca.issue(f"node:{who}")
            credentials = grpc.ssl_channel_credentials(ca.cert_pem, issued.key_pem, issued.cert_pem)
            return grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials, options=OPTIONS)

        async with channel("node1") as node1, channel("node2") as node2:
            held = [await _open_watch(node1, "node1") for _ in range(2)]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _open_watch(node1, "node1")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "node node1 holds 2 watch streams" in (refused.value.details() or "")
            held.append(await _open_watch(node2, "node2"))  # another identity is not held back
            for call in held:
                call.cancel()


async def _answers(channel: grpc.aio.Channel) -> bool:
    stub = pb_grpc.WorkloadEndpointServiceStub(channel)
    try:
        await stub.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=2)
    except grpc.aio.AioRpcError as error:
        code = error.code()
    else:
        return True
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), code
    return False


async def test_connections_past_the_limit_are_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=2) as server:
        target = f"127.0.0.1:{server.port}"
        first = grpc.aio.insecure_channel(target, options=OPTIONS)
        second = grpc.aio.insecure_channel(target, options=OPTIONS)
        third = grpc.aio.insecure_channel(target, options=OPTIONS)
        try:
            assert await _answers(first)
            assert await _answers(second)
            assert not await _answers(third)
            await first.close(grace=None)
            for _ in range(40):  # the server counts the closed connection out; the third reconnects
                if await _answers(third):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("a connection could not open after one closed")
        finally:
            for channel in (first, second, third):
                await channel.close(grace=None)


async def test_streams_past_the_limit_on_a_connection_wait(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, max_streams_per_connection=2) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=OPTIONS) as channel,
    ):
        held = [await _open_watch(channel) for _ in range(2)]
        third = asyncio.create_task(_open_watch(channel))
        await asyncio.sleep(1.0)
        assert not third.done(), "a third stream was served on a connection allowed two"
        held[0].cancel()
        held.append(await asyncio.wait_for(third, 10))
        for call in held:
            call.cancel()


async def test_a_connection_that_never_finishes_its_handshake_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, handshake_timeout_seconds=0.5) as server:

        def silent_client() -> float:
            started = time.monotonic()
            # Connects and sends nothing; whatever the server sends first (its SETTINGS), it must then close.
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                while sock.recv(1024):  # a socket.timeout here fails the test: the server never closed
                    pass
            return time.monotonic() - started

        assert await asyncio.to_thread(silent_client) < 5


async def test_a_connection_that_stalls_in_its_tls_handshake_is_closed(tmp_path: Path) -> None:
    ca = Authority()
    cert, key = ca.issue("server", server=True).write(tmp_path / "server", "server")
    async with serving(tmp_path, tls_cert_file=cert, tls_key_file=key, handshake_timeout_seconds=0.5) as server:

        def stalled_client() -> float:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                # A TLS record header announcing a ClientHello that never follows: the connection has spoken,
                # so only a limit on the whole handshake closes it.
                sock.sendall(b"\x16\x03\x01\x02\x00")
                while sock.recv(1024):  # a socket.timeout here fails the test: the server never closed
                    pass
            return time.monotonic() - started

        assert await asyncio.to_thread(stalled_client) < 5


def test_the_rate_limiter_is_a_token_bucket_per_identity() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=10, burst=3, clock=lambda: now[0])
    node1, node2 = Identity(frozenset({Role.NODE}), "node1"), Identity(frozenset({Role.NODE}), "node2")
    for _ in range(3):
        limiter.take(node1)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.take(node1)
    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_after == pytest.approx(0.1)
    limiter.take(node2)  # its own bucket
    now[0] += 0.1  # one token back
    limiter.take(node1)
    with pytest.raises(ResourceExhausted):
        limiter.take(node1)


async def test_calls_past_an_identitys_rate_are_told_when_to_retry(tmp_path: Path) -> None:
    ca = Authority()
    cert, key = ca.issue("server", server=True).write(tmp_path / "server", "server")
    ca_file = ca.write(tmp_path / "server")
    async with serving(
        tmp_path, tls_cert_file=cert, tls_key_file=key, client_ca_file=ca_file, rate_limit=2, rate_burst=5
    ) as server:

        def stub(who: str) -> tuple[grpc.aio.Channel, pb_grpc.WorkloadEndpointServiceAsyncStub]:
            issued = ca.issue(who)
            credentials = grpc.ssl_channel_credentials(ca.cert_pem, issued.key_pem, issued.cert_pem)
            channel = grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials, options=OPTIONS)
            return channel, pb_grpc.WorkloadEndpointServiceStub(channel)

        viewer_channel, viewer = stub("viewer:dashboard")
        admin_channel, admin = stub("admin:ops")
        try:
            for _ in range(5):
                await viewer.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await viewer.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "viewer dashboard makes more than 2 calls a second" in (refused.value.details() or "")
            delay = _retry_delay(refused.value)
            assert delay is not None
            assert 0 < delay <= 0.5
            await admin.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=5)  # another identity
            await asyncio.sleep(delay)
            await viewer.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(), timeout=5)
        finally:
            await viewer_channel.close(grace=None)
            await admin_channel.close(grace=None)
