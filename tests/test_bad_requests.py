"""Requests that do not parse, negative revisions and too many known versions: a clear INVALID_ARGUMENT from every
method, no traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import cast

import grpc
import pytest

from epsync.client import Client
from epsync.client import view as view_module
from epsync.client.view import MaterializedView
from epsync.errors import MAX_LISTED_VIOLATIONS, MAX_MESSAGE_CHARS, InvalidArgument, rpc_error
from epsync.model.kinds import MAX_KNOWN_VERSIONS
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort
from tests.factories import endpoint

SERVICE = "/epsync.v1.WorkloadEndpointService/"
# Field 1 says "length-delimited, 100 bytes follow", and none do: no message parses from this.
GARBAGE = b"\x0a\x64"


@pytest.fixture
async def channel(server: EpsyncServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


def invalid(error: grpc.aio.AioRpcError) -> InvalidArgument:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    converted = rpc_error(error)
    assert isinstance(converted, InvalidArgument)
    return converted


@pytest.mark.parametrize(
    "method", ["GetWorkloadEndpoint", "ListWorkloadEndpoints", "CreateWorkloadEndpoint", "DeleteWorkloadEndpoint"]
)
async def test_a_unary_request_that_does_not_parse_is_invalid_argument_without_a_traceback(
    channel: grpc.aio.Channel, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    call = channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(GARBAGE, timeout=10)
        violations = invalid(raised.value).violations
        assert [v.field for v in violations] == ["request"]
        assert "does not parse" in violations[0].description
        assert "class" not in str(raised.value.details())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert len([r for r in caplog.records if "did not parse" in r.getMessage()]) <= 1  # rate-limited


async def test_a_watch_request_that_does_not_parse_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    call = channel.unary_stream(SERVICE + "WatchWorkloadEndpoints", request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call(GARBAGE, timeout=10):
            pass
    assert [v.field for v in invalid(raised.value).violations] == ["request"]


async def test_negative_revisions_are_invalid_argument_in_every_method(
    client: Client, channel: grpc.aio.Channel
) -> None:
    stored = await client.create_endpoint(endpoint("web-1"))
    stub = pb_grpc.WorkloadEndpointServiceStub(channel)
    cases: list[tuple[Awaitable[object], str]] = [
        (
            stub.GetWorkloadEndpoint(pb.GetWorkloadEndpointRequest(name="web-1", min_resource_version=-1)),
            "min_resource_version",
        ),
        (stub.ListWorkloadEndpoints(pb.ListWorkloadEndpointsRequest(min_resource_version=-1)), "min_resource_version"),
        (
            stub.DeleteWorkloadEndpoint(pb.DeleteWorkloadEndpointRequest(name="web-1", resource_version=-1)),
            "resource_version",
        ),
        (
            stub.DeleteWorkloadEndpoint(pb.DeleteWorkloadEndpointRequest(name="nothing", resource_version=-1)),
            "resource_version",
        ),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert [v.field for v in invalid(raised.value).violations] == [field]
    for request, field in (
        (pb.WatchWorkloadEndpointsRequest(resource_version=-1), "resource_version"),
        (pb.WatchWorkloadEndpointsRequest(resource_version=-(2**63)), "resource_version"),
        (
            pb.WatchWorkloadEndpointsRequest(
                resource_version=stored.metadata.resource_version, known_resource_versions={"default/web-1": -1}
            ),
            'known_resource_versions["default/web-1"]',
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stub.WatchWorkloadEndpoints(request, timeout=10):
                pass
        assert [v.field for v in invalid(raised.value).violations] == [field]
    # Nothing was deleted by the refused requests.
    assert (await client.get_endpoint("web-1")).metadata.resource_version == stored.metadata.resource_version


async def test_a_watch_with_more_known_versions_than_the_limit_is_invalid_argument(
    client: Client, channel: grpc.aio.Channel
) -> None:
    stored = await client.create_endpoint(endpoint("web-1"))
    stub = pb_grpc.WorkloadEndpointServiceStub(channel)
    request = pb.WatchWorkloadEndpointsRequest(resource_version=stored.metadata.resource_version)
    request.known_resource_versions.update({f"default/gone-{i}": 1 for i in range(MAX_KNOWN_VERSIONS + 1)})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub.WatchWorkloadEndpoints(request, timeout=30):
            pass
    (violation,) = invalid(raised.value).violations
    assert violation.field == "known_resource_versions"
    assert f"{MAX_KNOWN_VERSIONS + 1:,} entries; at most {MAX_KNOWN_VERSIONS:,}" in violation.description
    # At the limit the same watch is served: the difference deletes every key the client made up.
    del request.known_resource_versions["default/gone-0"]
    stream = stub.WatchWorkloadEndpoints(request, timeout=30)
    first = await anext(aiter(stream))
    assert first.events
    stream.cancel()


def test_a_view_holding_more_than_the_limit_resumes_by_revision_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_module, "MAX_KNOWN_VERSIONS", 2)
    template = pb.WatchWorkloadEndpointsRequest(send_initial_events=True)
    view: MaterializedView[WorkloadEndpoint, pb.WatchWorkloadEndpointsRequest] = MaterializedView(
        lambda request: _never(), template, lambda obj: obj.metadata.name
    )
    view.revision = 7
    for name in ("a", "b"):
        view.objects[name] = endpoint(name)
    assert len(view._request().known_resource_versions) == 2
    view.objects["c"] = endpoint("c")
    resumed = view._request()
    assert (resumed.resource_version, len(resumed.known_resource_versions)) == (7, 0)


async def _never() -> AsyncIterator[pb.WatchWorkloadEndpointsResponse]:
    return
    yield


async def test_an_error_about_huge_bad_input_stays_small_enough_for_any_client(
    client: Client, channel: grpc.aio.Channel
) -> None:
    """A 256 KiB bad name and 5,000 bad ports: the status names them briefly, within gRPC's 8 KiB of trailers."""
    bad = endpoint("web-1")
    bad.metadata.name = "N" * (256 * 1024)
    bad.spec.ports.extend(WorkloadEndpointPort(name=f"p{i}", protocol="NOPE", port=80) for i in range(5_000))
    stub = pb_grpc.WorkloadEndpointServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateWorkloadEndpoint(pb.CreateWorkloadEndpointRequest(workload_endpoint=bad), timeout=30)
    error = invalid(raised.value)  # not RESOURCE_EXHAUSTED "metadata size exceeds hard limit"
    assert len(error.violations) == MAX_LISTED_VIOLATIONS + 1
    assert error.violations[-1].description.endswith("more violations not listed")
    assert len(raised.value.details() or "") <= MAX_MESSAGE_CHARS
    pairs = cast("Iterable[tuple[str, str | bytes]]", raised.value.trailing_metadata() or ())  # aio: plain pairs
    trailers = sum(len(key) + len(value) for key, value in pairs)
    assert trailers < 8 * 1024
    named = [v for v in error.violations if v.field == "metadata.name"]
    assert named, error.violations
    assert f'{"N" * 64}"... ({256 * 1024} characters)' in named[0].description
    assert await anext(aiter(client.list_endpoints()), None) is None  # nothing was stored
