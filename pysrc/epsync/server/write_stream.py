"""The WriteWorkloadEndpoints stream: many writes in flight on one stream, answered in request order.

One stream is two loops sharing a queue of write tasks in request order:
- The reader takes a request only while fewer than `max_in_flight` writes are unanswered, so past
  the bound it stops reading and gRPC flow control holds the client back; it resumes as answers go out.
  It starts each request as a task, in request order.
- The answerer awaits the oldest task, writes its response, frees its slot, and moves on.

Ordering. A registry write queues itself on the store in its first step (nothing is awaited before
`Datastore.write` queues the call), and tasks take their first step in the order they were created,
so the stream's writes reach the store, and get their revisions, in request order, and many of them
share a group commit. A write to a key that an earlier write on this stream is still writing waits
for that one to finish before it starts, and the reader waits with it, so later writes still reach
the store in request order. The registry reads the current object from the cache, which has applied
a write by the time it returns: so create A then delete A deletes what the create stored, and
same-key revisions increase in request order. (A write that loses a compare-and-swap race to another
client retries, and so may commit after later writes of this stream to other keys.)

Each write succeeds or fails on its own: its response carries the status the unary method would have
returned. Half-close: the reader ends, every write in flight is answered, the stream ends OK. A request
that does not parse is answered by ending the stream with INVALID_ARGUMENT, after the ones before it. Cancel
(or any other end): the reader and every unanswered write are cancelled and awaited before the call
returns; such a write may or may not have landed (the store finishes what it has queued).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, Awaitable, Callable

from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from epsync.errors import FieldViolation, InvalidArgument
from epsync.model.kinds import endpoint_key
from epsync.model.naming import derived_name
from epsync.server.registry import Registry
from epsync.server.resource_servicer import require_name
from epsync.server.status import status_error
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WriteWorkloadEndpointsRequest, WriteWorkloadEndpointsResponse

log = logging.getLogger(__name__)

# SPEC §5: at most this many unanswered writes per stream.
MAX_IN_FLIGHT = 1000

Send = Callable[[WriteWorkloadEndpointsResponse], Awaitable[None]]


async def serve_write_stream(
    registry: Registry[WorkloadEndpoint],
    requests: AsyncIterable[WriteWorkloadEndpointsRequest],
    send: Send,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> None:
    """Apply every request of one stream and `send` one response per request, in request order."""
    await _WriteStream(registry, max_in_flight).run(requests, send)


class _WriteStream:
    def __init__(self, registry: Registry[WorkloadEndpoint], max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._registry = registry
        self._slots = asyncio.Semaphore(max_in_flight)
        # Unanswered writes in request order; None marks the end of the requests.
        self._answers: asyncio.Queue[asyncio.Task[WriteWorkloadEndpointsResponse] | None] = asyncio.Queue()
        self._unanswered: set[asyncio.Task[WriteWorkloadEndpointsResponse]] = set()
        self._writing: dict[str, asyncio.Task[WriteWorkloadEndpointsResponse]] = {}  # key -> its running write
        self._read_count = 0

    async def run(self, requests: AsyncIterable[WriteWorkloadEndpointsRequest], send: Send) -> None:
        reader = asyncio.create_task(self._read(requests), name="epsync-write-stream-reader")
        try:
            while (task := await self._answers.get()) is not None:
                await send(await task)
                self._unanswered.discard(task)
                self._slots.release()
            await reader  # a request that cannot be read ends the stream, once everything before it is answered
        finally:
            await self._cancel(reader)

    async def _read(self, requests: AsyncIterable[WriteWorkloadEndpointsRequest]) -> None:
        try:
            iterator = aiter(requests)
            while True:
                await self._slots.acquire()
                try:
                    request = await anext(iterator)
                except StopAsyncIteration:
                    return
                except DecodeError as error:
                    # A request that does not parse has no request_id to answer: it ends the stream, after
                    # everything before it has been answered.
                    violation = FieldViolation("request", f"request {self._read_count + 1} does not parse: {error}")
                    raise InvalidArgument([violation]) from None
                self._read_count += 1
                key = _key_of(request)
                earlier = self._writing.get(key) if key is not None else None
                if earlier is not None:
                    await asyncio.wait([earlier])  # not `await earlier`: cancelling the reader must not cancel it
                task = asyncio.create_task(self._apply(request), name="epsync-write-stream-write")
                self._unanswered.add(task)
                if key is not None:
                    self._writing[key] = task
                    task.add_done_callback(functools.partial(self._forget, key))
                self._answers.put_nowait(task)
        finally:
            self._answers.put_nowait(None)

    def _forget(self, key: str, task: asyncio.Task[WriteWorkloadEndpointsResponse]) -> None:
        if self._writing.get(key) is task:
            del self._writing[key]

    async def _apply(self, request: WriteWorkloadEndpointsRequest) -> WriteWorkloadEndpointsResponse:
        """One write, exactly as its unary method does it; every failure becomes the response's status."""
        response = WriteWorkloadEndpointsResponse(request_id=request.request_id)
        try:
            operation = request.WhichOneof("operation")
            if operation == "create":
                stored = await self._registry.create(request.create.workload_endpoint)
                response.workload_endpoint.CopyFrom(stored)
                response.resource_version = stored.metadata.resource_version
            elif operation == "update":
                update = request.update
                stored = await self._registry.update(update.workload_endpoint, allow_missing=update.allow_missing)
                response.workload_endpoint.CopyFrom(stored)
                response.resource_version = stored.metadata.resource_version
            elif operation == "delete":
                delete = request.delete
                deleted = await self._registry.delete(
                    endpoint_key(delete.namespace, require_name(delete.name)),
                    resource_version=delete.resource_version,
                    uid=delete.uid,
                    allow_missing=delete.allow_missing,
                )
                if deleted.object is not None:
                    response.workload_endpoint.CopyFrom(deleted.object)
                response.resource_version = deleted.revision
            else:
                raise InvalidArgument([FieldViolation("operation", "set one of create, update or delete")])
        except Exception as error:
            failure = status_error(error, f"WriteWorkloadEndpoints (request_id {request.request_id!r})")
            response.status.CopyFrom(failure.to_status())
            return response
        response.status.CopyFrom(status_pb2.Status(code=0))
        return response

    async def _cancel(self, reader: asyncio.Task[None]) -> None:
        """Leave nothing behind: cancel the reader and every unanswered write, and wait until they are done."""
        tasks = [reader, *self._unanswered]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        if not reader.cancelled() and reader.exception() is not None:
            # Already raised by `run` unless the stream was cut off first; either way it is retrieved here.
            log.debug("WriteWorkloadEndpoints stopped reading requests: %r", reader.exception())


def _key_of(request: WriteWorkloadEndpointsRequest) -> str | None:
    """The key a request writes, as the registry will compute it; None when it cannot pass validation."""
    operation = request.WhichOneof("operation")
    if operation == "delete":
        return endpoint_key(request.delete.namespace, request.delete.name) if request.delete.name else None
    if operation == "create":
        endpoint = request.create.workload_endpoint
    elif operation == "update":
        endpoint = request.update.workload_endpoint
    else:
        return None
    # Validation names an endpoint without a name by its derived name, or rejects it before it writes.
    name = endpoint.metadata.name or derived_name(endpoint.spec)
    return endpoint_key(endpoint.metadata.namespace, name) if name else None
