"""Server reflection, v1 and v1alpha, as grpcurl and ghz use it: with no proto files at hand."""

from __future__ import annotations

import json

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from epsync.server.app import EpsyncServer
from tests.conftest import ghz_binary, grpcurl_binary, run_command

GET = "epsync.v1.WorkloadEndpointService.GetWorkloadEndpoint"


async def grpcurl(server: EpsyncServer, *args: str) -> str:
    code, out, err = await run_command(grpcurl_binary(), "-plaintext", f"127.0.0.1:{server.port}", *args)
    assert code == 0, err
    return out


async def reflect(
    server: EpsyncServer, service: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        responses = [response async for response in call(iter([request]))]
    (response,) = responses
    return response


async def test_grpcurl_lists_both_reflection_versions_and_describes_a_method(server: EpsyncServer) -> None:
    services = set((await grpcurl(server, "list")).split())
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= services
    described = await grpcurl(server, "describe", GET)
    assert f"{GET} is a method" in described
    assert "rpc GetWorkloadEndpoint ( .epsync.v1.GetWorkloadEndpointRequest )" in described
    message = await grpcurl(server, "describe", "epsync.v1.WorkloadEndpointSpec")
    assert "container_id" in message


async def test_both_versions_resolve_methods_and_fields_and_refuse_what_does_not_exist(server: EpsyncServer) -> None:
    for service in ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"):
        for symbol in (GET, "epsync.v1.WorkloadEndpointSpec.container_id", "epsync.v1.WorkloadEndpoint"):
            found = await reflect(
                server, service, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
            )
            assert found.WhichOneof("message_response") == "file_descriptor_response", (service, symbol)
            names = {
                descriptor_pb2.FileDescriptorProto.FromString(raw).name
                for raw in found.file_descriptor_response.file_descriptor_proto
            }
            assert any(name.startswith("epsync/v1/") for name in names)
        for missing in ("epsync.v1.WorkloadEndpointService.NoSuchMethod", "epsync.v1.Nope", "nope"):
            refused = await reflect(
                server, service, reflection_pb2.ServerReflectionRequest(file_containing_symbol=missing)
            )
            assert refused.WhichOneof("message_response") == "error_response", (service, missing)
            assert refused.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


async def test_ghz_calls_a_method_found_through_reflection(server: EpsyncServer) -> None:
    request = json.dumps({"namespace": "default", "name": "nobody-home"})
    code, out, err = await run_command(
        ghz_binary(), "--insecure", "--call", GET, "-d", request, "-n", "20", "-c", "2", "--format", "json",
        f"127.0.0.1:{server.port}",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["count"] == 20
    # Every call reached the method (found through reflection) and was answered: NOT_FOUND, the endpoint is absent.
    assert report["statusCodeDistribution"] == {"NotFound": 20}, report["statusCodeDistribution"]
