"""The servicers, run on the Rust gRPC transport (`epsync._core.Transport`) with grpc.aio's server surface.

grpc.aio serves every message on the event loop's thread: its Cython, and gRPC core's system calls made
while holding the GIL, cost some 0.1 ms a message, which was most of a write's cost and nearly all of
an event's. The Rust transport serves HTTP/2 on threads of its own; this module sees only calls. It wakes
once for whatever has happened since it last looked (calls begun, requests, half-closes, cancellations),
starts a task per call running the same handlers grpc.aio would run (those `add_generic_rpc_handlers` and
`add_registered_method_handlers` are given), and hands their responses and statuses to the transport,
which never blocks: a handler writing faster than its client reads is told to wait, and waits alone.
It serves TLS and mutual TLS too (`add_secure_port`), following the certificate files as they change as
grpc.aio does with `epsync.server.tls`; what it reports of that is logged under `epsync.server.tls`.

The handlers see a context with the parts of `grpc.aio.ServicerContext` they use: `write`,
`abort`, `set_code`/`set_details`/`set_trailing_metadata`, `invocation_metadata`, `peer`,
`auth_context`, `time_remaining`, `cancelled` and `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import grpc

from epsync._core import CALL, CANCELLED, HALF_CLOSE, LOG, MESSAGE, WRITABLE, Call, CallClosed, Transport
from epsync.server.tls import ReloadingTls, TlsError, TlsFiles

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]

# Read credit a handler gives back to the transport at once (a quarter of a call's read budget of 1 MiB).
GRANT_AT = 256 * 1024


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """What connections and calls are held to (from the server's config, server/app.py)."""

    max_connections: int
    max_concurrent_streams: int
    keepalive_seconds: float
    keepalive_timeout_seconds: float
    handshake_timeout_seconds: float
    max_receive_message: int
    max_send_message: int
    max_connection_age_seconds: float | None = None
    max_connection_age_grace_seconds: float = 0.0
    reuse_port: bool = False
    threads: int = 2
    response_buffer_bytes: int = 64 * 1024  # a call's responses queued before its handler waits


class _Details(NamedTuple):
    """What a generic handler is asked to find a method handler by (grpc.HandlerCallDetails)."""

    method: str
    invocation_metadata: Metadata


class _Abort(Exception):
    """Raised by `abort`: the call ends with this status (grpc.aio raises its AbortError the same way)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


class TransportServer:
    """A gRPC server on the Rust transport, used as `grpc.aio.Server` is (server/app.py)."""

    def __init__(self, options: TransportOptions) -> None:
        self._options = options
        self._registered: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler[Any, Any]] = []
        self._transport: Transport | None = None
        self._secure = False
        self._calls: dict[int, _Context] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()
        self._flush_scheduled = False

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler

    def add_insecure_port(self, address: str) -> int:
        """Bind `address` (port 0: any free port) for plaintext; returns the port, 0 if it cannot be bound."""
        return self._bind(address, None)

    def add_secure_port(self, address: str, tls: ReloadingTls) -> int:
        """Bind `address` for TLS from the files `tls` checked at start-up, which the transport follows from
        now on (it reads them again when they change, and counts its reloads as `tls.reloads`). Returns the
        port, 0 if it cannot be bound; `TlsError` if the transport cannot serve the files."""
        port = self._bind(address, tls.files)
        if port:
            transport = self._require_transport()
            tls.follow_elsewhere(lambda: transport.tls_reloads)
        return port

    def _bind(self, address: str, tls: TlsFiles | None) -> int:
        if self._transport is not None:
            raise RuntimeError("this server already listens; it serves one address")
        options = self._options
        try:
            self._transport = Transport(
                address,
                max_connections=options.max_connections,
                max_concurrent_streams=options.max_concurrent_streams,
                keepalive_seconds=options.keepalive_seconds,
                keepalive_timeout_seconds=options.keepalive_timeout_seconds,
                handshake_timeout_seconds=options.handshake_timeout_seconds,
                max_receive_message=options.max_receive_message,
                max_send_message=options.max_send_message,
                max_connection_age_seconds=options.max_connection_age_seconds,
                max_connection_age_grace_seconds=options.max_connection_age_grace_seconds,
                reuse_port=options.reuse_port,
                threads=options.threads,
                tls_cert_file=None if tls is None else tls.cert_file,
                tls_key_file=None if tls is None else tls.key_file,
                tls_client_ca_file=None if tls is None else tls.client_ca_file,
                response_buffer_bytes=options.response_buffer_bytes,
            )
        except OSError as error:
            log.debug("%s", error)
            return 0
        except ValueError as error:  # files that Python loaded but rustls cannot serve (a key type it lacks)
            raise TlsError(str(error)) from None
        self._secure = tls is not None
        return self._transport.port

    @property
    def connections(self) -> int:
        return 0 if self._transport is None else self._transport.connections

    @property
    def calls_in_progress(self) -> int:
        """Calls whose handlers are running."""
        return len(self._calls)

    async def start(self) -> None:
        transport = self._require_transport()
        transport.set_unary_methods(
            [path for path, handler in self._registered.items() if not handler.request_streaming]
        )
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(transport.fd, self._take_events)
        transport.start()

    async def stop(self, grace: float | None) -> None:
        """Stop taking connections and calls (GOAWAY), give calls in progress `grace` seconds, then cancel the
        rest and close every connection."""
        transport = self._transport
        if transport is None or self._stopped.is_set():
            return
        transport.drain()
        deadline = time.monotonic() + (grace or 0.0)
        running = {context.task for context in self._calls.values() if context.task is not None}
        if running and grace:
            _, running = await asyncio.wait(running, timeout=grace)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)
        # Connections close by themselves once their last call's status has gone out (they were sent GOAWAY).
        while transport.connections and time.monotonic() < deadline:  # noqa: ASYNC110 (a count in Rust, no event)
            await asyncio.sleep(0.01)
        transport.close()
        if self._loop is not None:
            self._loop.remove_reader(transport.fd)
        self._stopped.set()

    async def wait_for_termination(self) -> None:
        await self._stopped.wait()

    def _require_transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("add_insecure_port or add_secure_port first")
        return self._transport

    # --- calls ---------------------------------------------------------------------------------

    def _take_events(self) -> None:
        transport = self._require_transport()
        with contextlib.suppress(BlockingIOError):
            os.read(transport.fd, 4096)
        for event in transport.take_events():
            kind = event[0]
            if kind == CALL:
                try:
                    self._begin(event[1], event[2], event[3], event[4], event[5])
                except Exception:  # a bug in finding the handler: this call fails, the batch's others go on
                    log.exception("cannot start a call of %s", event[2])
                    event[1].finish(grpc.StatusCode.INTERNAL.value[0], "the server could not start this call")
                    self.flush_soon()
                continue
            if kind == LOG:
                logging.getLogger(f"epsync.server.{event[1]}").log(event[2], "%s", event[3])
                continue
            context = self._calls.get(event[1])
            if context is None:
                continue  # the handler has already finished
            if kind == MESSAGE:
                context.received(event[2], event[3])
            elif kind == HALF_CLOSE:
                context.received(None)
            elif kind == CANCELLED:
                context.cancel()
            elif kind == WRITABLE:
                context.may_write()

    def _begin(
        self,
        call: Call,
        method: str,
        metadata: list[tuple[str, str | bytes]],
        request: bytes | None,
        timeout: float | None,
    ) -> None:
        handler = self._handler(method, tuple(metadata))
        if handler is None:
            call.finish(grpc.StatusCode.UNIMPLEMENTED.value[0], "Method not found!")
            self.flush_soon()
            return
        context = _Context(call, handler, tuple(metadata), timeout, self.flush_soon, secure=self._secure)
        self._calls[call.id] = context
        assert self._loop is not None
        context.task = self._loop.create_task(context.run(request))
        context.task.add_done_callback(lambda _: self._calls.pop(call.id, None))

    def flush_soon(self) -> None:
        """Calls answered or read from during this turn of the event loop: wake the transport at its end, once."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._transport is not None:
            self._transport.flush()

    def _handler(self, method: str, metadata: Metadata) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._registered.get(method)
        if handler is not None:
            return handler
        details = _Details(method, metadata)
        for generic in self._generic:
            found = generic.service(details)  # type: ignore[arg-type]
            if found is not None:
                return found
        return None


class _Context:
    """One call: its handler's context, and the task that runs the handler."""

    def __init__(
        self,
        call: Call,
        handler: grpc.RpcMethodHandler[Any, Any],
        metadata: Metadata,
        timeout: float | None,
        flush_soon: Callable[[], None],
        *,
        secure: bool,
    ) -> None:
        self._call = call
        self._flush_soon = flush_soon
        self._secure = secure
        self._handler = handler
        self._metadata = metadata
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._serialize: Callable[[Any], bytes] | None = handler.response_serializer
        # Requests with the read credit each took; None: the client sent its last request.
        self._requests: deque[tuple[bytes, int] | None] = deque()
        self._ungranted = 0  # credit of requests taken but not yet given back to the transport
        self._request_waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._cancelled = False
        self._finished = False
        self.task: asyncio.Task[None] | None = None

    # --- the transport's side ------------------------------------------------------------------

    def received(self, request: bytes | None, credit: int = 0) -> None:
        self._requests.append(None if request is None else (request, credit))
        waiter = self._request_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def may_write(self) -> None:
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        self._cancelled = True
        if self.task is not None:
            self.task.cancel()

    async def run(self, request: bytes | None) -> None:
        handler: Any = self._handler  # grpc-stubs types the handlers for grpc's own contexts
        call = self._call
        try:
            if handler.request_streaming:
                requests = _Requests(self, handler.request_deserializer)
                if handler.response_streaming:
                    result: Any = handler.stream_stream(requests, self)
                else:
                    result = handler.stream_unary(requests, self)
            else:
                message = await self._first_request() if request is None else request
                parsed = _deserialize(handler.request_deserializer, message)
                if handler.response_streaming:
                    result = handler.unary_stream(parsed, self)
                else:
                    result = handler.unary_unary(parsed, self)
            if handler.response_streaming:
                if inspect.isasyncgen(result):
                    async for response in result:
                        await self.write(response)
                else:
                    await result
            else:
                response = await result
                if response is not None:
                    call.send(response if self._serialize is None else self._serialize(response))
                    self._flush_soon()
            self._end(self._code or grpc.StatusCode.OK, self._details, self._trailing)
        except _Abort as abort:
            self._end(abort.code, abort.details, abort.trailing)
        except _Unparsable:
            self._end(grpc.StatusCode.INTERNAL, "Exception deserializing request!", ())
        except CallClosed:
            pass  # the client went away: nobody is left to answer
        except asyncio.CancelledError:
            if not self._cancelled:
                raise  # the server is stopping
        except Exception as error:
            log.exception("unexpected error in %s", self._handler)
            self._end(grpc.StatusCode.UNKNOWN, f"Unexpected {type(error)}: {error}", ())

    def _end(self, code: grpc.StatusCode, details: str, trailing: Metadata) -> None:
        self._finished = True
        try:
            self._call.finish(code.value[0], details or "", list(trailing))
        except ValueError:
            log.exception("a status with trailing metadata that cannot be sent")
            self._call.finish(grpc.StatusCode.INTERNAL.value[0], "the server's status could not be sent")
        self._flush_soon()

    async def _first_request(self) -> bytes:
        """A unary method's request, served as a stream (a handler the transport was not told of)."""
        message = await self.next_request()
        if message is None:
            raise _Abort(grpc.StatusCode.INTERNAL, "the call ended without its request message", ())
        return message

    async def next_request(self) -> bytes | None:
        while not self._requests:
            self._request_waiter = asyncio.get_running_loop().create_future()
            await self._request_waiter
            self._request_waiter = None
        taken = self._requests.popleft()
        if taken is None:
            self._requests.append(None)  # the end stays the end for further reads
            return None
        request, credit = taken
        self._ungranted += credit
        # Given back in bulk, but all of it before the handler waits: the transport may be waiting for it.
        if self._ungranted >= GRANT_AT or not self._requests:
            self._call.grant(self._ungranted)
            self._ungranted = 0
            self._flush_soon()
        return request

    # --- grpc.aio.ServicerContext, as far as handlers use it ------------------------------------

    async def write(self, message: Any) -> None:
        data = message if self._serialize is None else self._serialize(message)
        room = self._call.send(data)
        self._flush_soon()
        if not room:
            self._writable = asyncio.get_running_loop().create_future()
            try:
                await self._writable
            finally:
                self._writable = None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> NoReturn:
        raise _Abort(code, details, tuple(trailing_metadata) or self._trailing)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._call.peer

    def auth_context(self) -> dict[str, list[bytes]]:
        """What grpc.aio gives for the connection's security, with the same keys and types (str keys, lists
        of bytes); of a client certificate, only its PEM (`x509_pem_cert`), which identities come from."""
        if not self._secure:
            return {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}
        context = {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]}
        certificate = self._call.peer_certificate
        if certificate is not None:
            context["x509_pem_cert"] = [certificate]
        return context

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._finished or self._cancelled


class _Unparsable(Exception):
    """A unary request the method's deserializer refused."""


def _deserialize(deserializer: Callable[[bytes], Any] | None, data: bytes) -> Any:
    if deserializer is None:
        return data
    try:
        return deserializer(data)
    except Exception as error:
        raise _Unparsable from error


class _Requests:
    """A client-streaming call's requests, as grpc.aio gives them to its handler; a request its deserializer
    refuses raises the deserializer's own error from `__anext__`, as grpc.aio's iterator does."""

    def __init__(self, context: _Context, deserializer: Callable[[bytes], Any] | None) -> None:
        self._context = context
        self._deserializer = deserializer

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        request = await self._context.next_request()
        if request is None:
            raise StopAsyncIteration
        return request if self._deserializer is None else self._deserializer(request)


# What serves the servicers: grpc.aio's server or this one (server/app.py chooses).
GrpcServer = grpc.aio.Server | TransportServer
