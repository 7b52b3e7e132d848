"""Fuzzing request decoding and validation: random and mutated bytes to every method of a real server.

Whatever a client sends, the answer is a status the API defines (never UNKNOWN or INTERNAL, which
would mean an unhandled failure inside the server), and the server goes on serving. The bytes are
random, or a valid request with bytes flipped, cut or repeated, which reaches far deeper into
validation than random bytes do. `make test` runs a short fuzz (EPSYNC_FUZZ_EXAMPLES, default 300 per
test); `make fuzz` runs a long one. A failure hypothesis finds is kept as an `@example` below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync.v1 import profile_service_pb2 as profile_pb
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from tests.factories import endpoint, profile

EXAMPLES = int(os.environ.get("EPSYNC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVING = re.compile(rb"epsync serving on \S*:(\d+)")
# Statuses that say the server did not handle what it was sent.
UNHANDLED = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

VALID: dict[str, bytes] = {
    "/epsync.v1.WorkloadEndpointService/CreateWorkloadEndpoint": wep_pb.CreateWorkloadEndpointRequest(
        workload_endpoint=endpoint("fuzz", labels={"app": "web"})
    ).SerializeToString(),
    "/epsync.v1.WorkloadEndpointService/UpdateWorkloadEndpoint": wep_pb.UpdateWorkloadEndpointRequest(
        workload_endpoint=endpoint("fuzz"), allow_missing=True
    ).SerializeToString(),
    "/epsync.v1.WorkloadEndpointService/GetWorkloadEndpoint": wep_pb.GetWorkloadEndpointRequest(
        namespace="default", name="fuzz"
    ).SerializeToString(),
    "/epsync.v1.WorkloadEndpointService/ListWorkloadEndpoints": wep_pb.ListWorkloadEndpointsRequest(
        label_selector="app == 'web' && has(x)", page_size=2
    ).SerializeToString(),
    "/epsync.v1.WorkloadEndpointService/DeleteWorkloadEndpoint": wep_pb.DeleteWorkloadEndpointRequest(
        namespace="default", name="fuzz", allow_missing=True
    ).SerializeToString(),
    "/epsync.v1.ProfileService/CreateProfile": profile_pb.CreateProfileRequest(
        profile=profile("fuzz", {"team": "a"})
    ).SerializeToString(),
    "/epsync.v1.ProfileService/ListProfiles": profile_pb.ListProfilesRequest(
        label_selector="team in {'a'}"
    ).SerializeToString(),
}


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`epsync serve` (one process, SQLite) for the whole module."""
    data = tmp_path_factory.mktemp("fuzz") / "data"
    process = subprocess.Popen(
        [sys.executable, "-m", "epsync", "serve", "--listen", "127.0.0.1:0", "--workers", "1", "--data-dir", str(data)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert process.stderr is not None
    port = None
    for line in process.stderr:
        if found := SERVING.search(line):
            port = found.group(1).decode()
            break
    assert port is not None, "the server did not start"
    drain = subprocess.Popen(["cat"], stdin=process.stderr, stdout=subprocess.DEVNULL)  # keeps its log flowing
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        drain.wait(10)
        process.stderr.close()


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as opened:
        yield opened


def call(channel: grpc.Channel, method: str, payload: bytes) -> None:
    """Send raw bytes to `method`; fail on an answer that says the server did not handle them."""
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    failure: grpc.RpcError | None = None
    try:
        stub(payload, timeout=10)
    except grpc.RpcError as error:
        failure = error
    if failure is not None:
        code, details = failure.code(), failure.details() or ""
        assert code not in UNHANDLED, f"{method} answered {code.name}: {details}"
        assert len(details) <= 1100


def mutated(valid: bytes) -> st.SearchStrategy[bytes]:
    """`valid` with bytes flipped, inserted, removed, or cut short."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 6))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            match draw(st.sampled_from(["flip", "insert", "delete", "cut", "repeat"])):
                case "flip":
                    data[at] = draw(st.integers(0, 255))
                case "insert":
                    data[at:at] = draw(st.binary(min_size=1, max_size=8))
                case "delete":
                    del data[at]
                case "cut":
                    del data[at:]
                case "repeat":
                    data[at:at] = data[at : at + draw(st.integers(1, 16))]
        return bytes(data)

    return mutate()


METHODS = sorted(VALID)


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=256))
def test_random_bytes_are_answered_with_a_defined_status(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call(channel, method, payload)


@FUZZ
@given(data=st.data(), method=st.sampled_from(METHODS))
def test_mutated_requests_are_answered_with_a_defined_status(
    channel: grpc.Channel, data: st.DataObject, method: str
) -> None:
    call(channel, method, data.draw(mutated(VALID[method])))


def test_the_server_still_serves_after_the_fuzzing(channel: grpc.Channel) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
