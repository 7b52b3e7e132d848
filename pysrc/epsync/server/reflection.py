"""Server reflection, v1 and v1alpha, resolving every symbol grpcurl and ghz ask for (SPEC §5).

grpcio-reflection serves v1alpha only, and its lookup of the file that declares a symbol fails for
a method (`epsync.v1.WorkloadEndpointService.GetWorkloadEndpoint`, what `grpcurl describe` and
`ghz --call` ask for): the protobuf runtime's pool finds services, messages and enums by name, not
their members. This servicer answers for a member with its service's or message's file, and is
registered under both service names: reflection v1's messages are v1alpha's, field for field (the
protos differ only in their package), so one implementation serves both.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer as _AsyncReflectionServicer

from epsync.server.transport import GrpcServer

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)


class ReflectionServicer(_AsyncReflectionServicer):  # type: ignore[misc]
    """grpcio-reflection's servicer, with members of services and messages resolved to their file."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return super()._file_containing_symbol(request, self._declared_by(fully_qualified_name))

    def _declared_by(self, name: str) -> str:
        """`name` if the pool knows it; for a method, field or nested type, the service or message declaring it."""
        try:
            self._pool.FindFileContainingSymbol(name)
        except KeyError:
            pass
        else:
            return name
        parent, _, member = name.rpartition(".")
        try:
            if member in self._pool.FindServiceByName(parent).methods_by_name:
                return parent
        except KeyError:
            pass
        try:
            message = self._pool.FindMessageTypeByName(parent)
        except KeyError:
            return name
        members = (message.fields_by_name, message.nested_types_by_name, message.enum_types_by_name)
        return parent if any(member in table for table in members) else name


def add_reflection(server: GrpcServer, service_names: tuple[str, ...]) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (the reflection services are added to the list)."""
    servicer = ReflectionServicer((*service_names, *SERVICE_NAMES))
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in SERVICE_NAMES:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
