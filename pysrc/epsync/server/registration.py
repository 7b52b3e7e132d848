"""Registering a servicer from its service descriptor, with pre-encoded responses where asked.

The generated `add_*Servicer_to_server` functions give every method a protobuf serializer.
Watch methods, and the endpoint List, answer with responses that are already wire bytes (see
`epsync.sync.wire`), so they are registered here with an identity serializer instead: grpc.aio
then sends the bytes as they are. Requests of unary and server-streaming methods are parsed here too,
so that one that does not parse is a clear INVALID_ARGUMENT (grpc itself answers UNKNOWN naming a
Python class, and logs a traceback for every such request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from typing import Any, cast

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from epsync._core import KnownVersions, split_known_versions
from epsync.errors import FailedPrecondition, FieldViolation, InvalidArgument, PermissionDenied, ResourceExhausted
from epsync.server.admission import RateLimiter, WatcherBudget
from epsync.server.authorization import Authorizer
from epsync.server.status import abort
from epsync.server.transport import GrpcServer

log = logging.getLogger(__name__)

_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(
    server: GrpcServer,
    service: ServiceDescriptor,
    servicer: object,
    *,
    pre_encoded: Collection[str] = (),
    authorizer: Authorizer | None = None,
    watchers: WatcherBudget | None = None,
    rate: RateLimiter | None = None,
) -> None:
    """Serve every method of `service` from `servicer`; methods named in `pre_encoded` yield bytes. With an
    `authorizer`, every request is checked against its rules (server/authorization.py) once parsed."""
    unknown = set(pre_encoded) - {m.name for m in service.methods}
    if unknown:
        raise ValueError(f"{service.full_name} has no methods {sorted(unknown)}")
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_type: Any = message_factory.GetMessageClass(method.input_type)
        response_type: Any = message_factory.GetMessageClass(method.output_type)
        factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        implementation = getattr(servicer, method.name)
        watch = method.server_streaming and not method.client_streaming
        if authorizer is not None or (watch and watchers is not None):
            implementation = _admitting(implementation, method.name, authorizer, watchers if watch else None, rate)
        if method.client_streaming:
            # The stream's own reader meets a request that does not parse and ends the stream with
            # INVALID_ARGUMENT after the ones before it (server.write_stream).
            handler, deserializer = implementation, request_type.FromString
        elif _KNOWN_VERSIONS in method.input_type.fields_by_name:
            number = method.input_type.fields_by_name[_KNOWN_VERSIONS].number
            handler, deserializer = _parsing_watch(implementation, request_type, method.full_name, number), None
        else:
            handler, deserializer = _parsing(implementation, request_type, method.full_name), None
        handlers[method.name] = factory(
            handler,
            request_deserializer=deserializer,
            response_serializer=None if method.name in pre_encoded else response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # Registered handlers spare grpc a per-call lookup; grpc-stubs does not know the method yet.
    cast(Any, server).add_registered_method_handlers(service.full_name, handlers)


def _admitting(
    implementation: Callable[..., Any],
    method: str,
    authorizer: Authorizer | None,
    watchers: WatcherBudget | None,  # for a watch method
    rate: RateLimiter | None,
) -> Callable[..., Any]:
    """`implementation` behind the authorizer's rules for `method` and, for a watch, the watcher budget: a
    refused request is answered PERMISSION_DENIED naming the caller's identity and what it may do
    (FAILED_PRECONDITION quoting the kubernetes mode's table; RESOURCE_EXHAUSTED TOO_MANY_WATCHERS) and
    never reaches the servicer."""

    async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any], *rest: Any) -> Any:
        identity = None
        try:
            if authorizer is not None:
                identity = authorizer.check(method, context, request)
            # Per identity only when callers are identified by their certificates.
            counted = identity if authorizer is not None and authorizer.identities.required else None
            if rate is not None and counted is not None:
                rate.take(counted)
            if watchers is not None:
                watchers.acquire(counted)
        except (PermissionDenied, FailedPrecondition, ResourceExhausted) as error:
            await abort(context, error)
            return None
        try:
            response = await implementation(request, context, *rest)
        finally:
            if watchers is not None:
                watchers.release(counted)
        if authorizer is not None and identity is not None:
            try:
                authorizer.check_response(method, identity, response)
            except PermissionDenied as error:
                await abort(context, error)
                return None
        return response

    return handler


def _parsing(implementation: Callable[..., Any], request_type: Any, method: str) -> Callable[..., Any]:
    """`implementation`, taking the request as received (bytes) and parsing it itself: a request that does
    not parse is answered INVALID_ARGUMENT naming the request, not grpc's UNKNOWN with a Python class name and
    a traceback in the log for each."""

    async def handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = request_type.FromString(raw)
        except DecodeError as error:
            _unparsable.note(method, error)
            violation = FieldViolation("request", f"the {request_type.DESCRIPTOR.name} does not parse: {error}")
            await abort(context, InvalidArgument([violation]))
            return None
        return await implementation(request, context)

    return handler


# A watch request's map of known versions is read by the Rust core from the request's bytes: parsed
# by the protobuf runtime and converted entry by entry, 10,000 of them held the event loop for ~20 ms.
_KNOWN_VERSIONS = "known_resource_versions"


def read_known_versions(raw: bytes, field: int) -> tuple[bytes, KnownVersions]:
    """A watch request's bytes split into its other fields' bytes and its known versions (field number `field`);
    `ValueError` when they do not parse. Read in place: 10,000 entries take ~0.4 ms of the event loop, and
    reading them on a thread held it longer (~2 ms, waiting for the GIL back; bench/bench_stall.py)."""
    return split_known_versions(raw, field)


def _parsing_watch(
    implementation: Callable[..., Any], request_type: Any, method: str, field: int
) -> Callable[..., Any]:
    """`_parsing` for a watch: the known versions (field number `field`) come apart, as `KnownVersions`, the
    implementation's third argument; the protobuf runtime parses the rest of the request."""

    async def handler(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            rest, known = read_known_versions(raw, field)
            request = request_type.FromString(rest)
        except (ValueError, DecodeError) as error:
            _unparsable.note(method, error)
            violation = FieldViolation("request", f"the {request_type.DESCRIPTOR.name} does not parse: {error}")
            await abort(context, InvalidArgument([violation]))
            return None
        return await implementation(request, context, known)

    return handler


class _RateLimitedLog:
    """One warning line per `interval` seconds at most, counting the ones it held back: a client sending
    garbage in a loop must not flood the log."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = -interval
        self._held_back = 0

    def note(self, method: str, error: Exception) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._held_back += 1
            return
        held_back, self._held_back, self._last = self._held_back, 0, now
        more = f" (and {held_back} more since the last such line)" if held_back else ""
        log.warning("a %s request did not parse: %s%s", method, error, more)


_unparsable = _RateLimitedLog()
