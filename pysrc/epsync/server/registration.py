"""Registering a servicer from its service descriptor, with pre-encoded responses where asked.

The generated `add_*Servicer_to_server` functions give every method a protobuf serializer.
Watch methods, and the endpoint List, answer with responses that are already wire bytes (see
`epsync.sync.wire`), so they are registered here with an identity serializer instead: grpc.aio
then sends the bytes as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(
    server: grpc.aio.Server, service: ServiceDescriptor, servicer: object, *, pre_encoded: Collection[str] = ()
) -> None:
    """Serve every method of `service` from `servicer`; methods named in `pre_encoded` yield bytes."""
    unknown = set(pre_encoded) - {m.name for m in service.methods}
    if unknown:
        raise ValueError(f"{service.full_name} has no methods {sorted(unknown)}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type: Any = message_factory.GetMessageClass(method.input_type)
        response_type: Any = message_factory.GetMessageClass(method.output_type)
        factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=request_type.FromString,
            response_serializer=None if method.name in pre_encoded else response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # Registered handlers spare grpc a per-call lookup; grpc-stubs does not know the method yet.
    cast(Any, server).add_registered_method_handlers(service.full_name, handlers)
