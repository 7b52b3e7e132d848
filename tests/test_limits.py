"""Object limits, and List pages and watch responses that any gRPC client can receive.

Valid objects can be large (many ports, many long labels): a List of them must still come in
pages, and a watch's initial state in responses, each under the 4 MiB that gRPC clients receive
by default; objects past the limits are refused with a field violation that says the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from epsync.client import Client
from epsync.errors import InvalidArgument, rpc_error
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort
from tests.factories import endpoint

DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024  # what grpcio, grpc-go and grpcurl receive unless told otherwise
MAX_LABELS = 256


def big_endpoint(name: str) -> WorkloadEndpoint:
    """A valid endpoint of about 200 KiB: 250 long labels and 6,000 named ports."""
    prefix = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60
    labels = {f"{prefix}/{'k' * 55}{i:04d}": "v" * 63 for i in range(MAX_LABELS - 6)}
    wep = endpoint(name, labels=labels)
    wep.spec.ports.extend(WorkloadEndpointPort(name=f"p{i}", protocol="TCP", port=1 + i % 65535) for i in range(6000))
    return wep


@pytest.fixture
async def default_channel(server: EpsyncServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel with gRPC's default limits, as a client that never set any has."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel


async def test_big_valid_objects_list_and_watch_within_a_default_clients_limit(
    client: Client, default_channel: grpc.aio.Channel
) -> None:
    names = [f"big-{i:02d}" for i in range(30)]
    for name in names:
        stored = await client.create_endpoint(big_endpoint(name))
    assert 150_000 < stored.ByteSize() < 512 * 1024
    stub = pb_grpc.WorkloadEndpointServiceStub(default_channel)
    listed: list[str] = []
    pages = 0
    request = pb.ListWorkloadEndpointsRequest()
    while True:  # the default page size (500) would be 6 MB of these: the pages are cut by bytes
        page = await stub.ListWorkloadEndpoints(request, timeout=30)
        assert page.ByteSize() <= DEFAULT_CLIENT_LIMIT
        listed += [item.metadata.name for item in page.items]
        pages += 1
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert listed == names
    assert pages >= 2
    watched: list[str] = []
    stream = stub.WatchWorkloadEndpoints(pb.WatchWorkloadEndpointsRequest(send_initial_events=True), timeout=30)
    async for response in stream:
        assert response.ByteSize() <= DEFAULT_CLIENT_LIMIT
        watched += [e.object.metadata.name for e in response.events if e.HasField("object")]
        if any(e.initial_events_end for e in response.events):
            break
    stream.cancel()
    assert watched == names


async def test_objects_past_the_limits_are_refused_naming_the_limit(
    client: Client, default_channel: grpc.aio.Channel
) -> None:
    many = endpoint("many-labels", labels={f"k{i}": "v" for i in range(MAX_LABELS + 1)})
    with pytest.raises(InvalidArgument) as raised:
        await client.create_endpoint(many)
    assert [(v.field, v.description) for v in raised.value.violations] == [
        ("metadata.labels", f"{MAX_LABELS + 1} labels; at most {MAX_LABELS}")
    ]
    huge = endpoint("huge")
    huge.spec.ports.extend(WorkloadEndpointPort(name=f"p{i}", protocol="TCP", port=80) for i in range(60_000))
    stub = pb_grpc.WorkloadEndpointServiceStub(default_channel)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.CreateWorkloadEndpoint(pb.CreateWorkloadEndpointRequest(workload_endpoint=huge), timeout=30)
    error = rpc_error(failed.value)
    assert isinstance(error, InvalidArgument)
    ((field, description),) = [(v.field, v.description) for v in error.violations]
    assert field == ""
    assert description == f"the endpoint is {huge.ByteSize()} bytes encoded; at most {512 * 1024}"
    assert await anext(aiter(client.list_endpoints()), None) is None
