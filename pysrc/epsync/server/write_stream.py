"""The WriteWorkloadEndpoints stream: many writes in flight on one stream, answered in request order.

One stream is a reader and an answerer sharing a queue of futures in request order:
- The reader takes a request only while fewer than `max_in_flight` writes are unanswered, so past
  the bound it stops reading and gRPC flow control holds the client back; it resumes as answers go
  out. It submits each request to the registry (`Registry.submit`, synchronous), which batches the
  writes of every stream and unary call together; no task is made per write.
- The answerer awaits the oldest write's future, writes its response, frees its slot, and moves on.

Ordering is the registry's: writes are queued in request order, and a write to a key an earlier
write is still writing waits for it, with every later write of the same stream; so the stream's
writes reach the store, and get their revisions, in request order, and create A then delete A
deletes what the create stored. (A write that loses a compare-and-swap race to another replica
retries, and so may commit after later writes of this stream to other keys.)

Each write succeeds or fails on its own: its response carries the status the unary method would have
returned. A request may carry a `batch` of writes instead of one: each is taken exactly as if it had come
alone (one slot each) and their answers go back together, in order, in one response, which saves a message
each way per write; a malformed batch (with an operation of its own, nested, or larger than the bound) is
answered INVALID_ARGUMENT and none of its writes is made.

Half-close: the reader ends, every write in flight is answered, the stream ends OK. A request that does
not parse is answered by ending the stream with INVALID_ARGUMENT, after the ones before it.
Cancel (or any other end): the reader is cancelled and awaited before the call returns; writes already
submitted may or may not land (the registry finishes what it has taken).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable

from google.protobuf.message import DecodeError

from epsync.errors import FieldViolation, InvalidArgument
from epsync.model.kinds import endpoint_key
from epsync.server.registry import CreateOp, Deleted, DeleteOp, Outcome, Registry, UpdateOp
from epsync.server.resource_servicer import require_name
from epsync.server.status import status_error
from epsync.sync.wire import object_with_version, write_batch_result, write_result
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WriteWorkloadEndpointsRequest

log = logging.getLogger(__name__)

# SPEC §5: at most this many unanswered writes per stream.
MAX_IN_FLIGHT = 1000

Send = Callable[[bytes], Awaitable[None]]  # writes one pre-encoded WriteWorkloadEndpointsResponse
# A write's refusal for the stream's caller (server/authorization.py), or None: it is answered with it.
Authorize = Callable[[WriteWorkloadEndpointsRequest], Exception | None]
_OK = b""  # google.rpc.Status with code 0, encoded


async def serve_write_stream(
    registry: Registry[WorkloadEndpoint],
    requests: AsyncIterable[WriteWorkloadEndpointsRequest],
    send: Send,
    *,
    max_in_flight: int = MAX_IN_FLIGHT,
    authorize: Authorize | None = None,
    create_refused: str = "",
) -> None:
    """Apply every request of one stream and `send` one response per request, in request order. A write
    `authorize` refuses is answered with its refusal and not made; an update that would create is refused
    with `create_refused` when set (UpdateOp.create_refused)."""
    await _WriteStream(registry, max_in_flight, authorize, create_refused).run(requests, send)


class _WriteStream:
    def __init__(
        self,
        registry: Registry[WorkloadEndpoint],
        max_in_flight: int,
        authorize: Authorize | None = None,
        create_refused: str = "",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._registry = registry
        self._authorize = authorize
        self._create_refused = create_refused
        self._max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        # Unanswered requests in request order (a batch: its writes' futures); None marks the end of the requests.
        self._answers: asyncio.Queue[tuple[str, _Answer] | None] = asyncio.Queue()
        self._read_count = 0

    async def run(self, requests: AsyncIterable[WriteWorkloadEndpointsRequest], send: Send) -> None:
        reader = asyncio.create_task(self._read(requests), name="epsync-write-stream-reader")
        try:
            while (item := await self._answers.get()) is not None:
                request_id, answer = item
                if isinstance(answer, list):
                    results = [await _response(write_id, future) for write_id, future in answer]
                    await send(write_batch_result(request_id, results))
                    for _ in answer:
                        self._slots.release()
                else:
                    await send(await _response(request_id, answer))
                    self._slots.release()
            await reader  # a request that cannot be read ends the stream, once everything before it is answered
        finally:
            reader.cancel()
            await asyncio.wait([reader])
            if not reader.cancelled() and reader.exception() is not None:
                # Already raised by `run` unless the stream was cut off first; either way it is retrieved here.
                log.debug("WriteWorkloadEndpoints stopped reading requests: %r", reader.exception())

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
                if not request.batch:
                    self._answers.put_nowait((request.request_id, self._authorized_submit(request)))
                    continue
                problem = self._batch_problem(request)
                if problem is not None:
                    self._answers.put_nowait((request.request_id, _failed(problem)))
                    continue
                for _ in range(len(request.batch) - 1):  # one slot per write; the request took the first
                    await self._slots.acquire()
                answers = [(write.request_id, self._authorized_submit(write)) for write in request.batch]
                self._answers.put_nowait((request.request_id, answers))
        finally:
            self._answers.put_nowait(None)

    def _authorized_submit(self, write: WriteWorkloadEndpointsRequest) -> asyncio.Future[Outcome]:
        refused = self._authorize(write) if self._authorize is not None else None
        return _failed(refused) if refused is not None else self._submit(write)

    def _batch_problem(self, request: WriteWorkloadEndpointsRequest) -> InvalidArgument | None:
        """Why a batch cannot be taken as it is (none of its writes is then made), or None."""
        if request.WhichOneof("operation") is not None:
            return InvalidArgument([FieldViolation("batch", "a request carries one operation or a batch, not both")])
        if len(request.batch) > self._max_in_flight:
            return InvalidArgument(
                [FieldViolation("batch", f"{len(request.batch)} writes; a batch holds at most {self._max_in_flight}")]
            )
        for i, write in enumerate(request.batch):
            if write.batch:
                return InvalidArgument(
                    [FieldViolation(f"batch[{i}].batch", "a write in a batch may not carry a batch")]
                )
        return None

    def _submit(self, request: WriteWorkloadEndpointsRequest) -> asyncio.Future[Outcome]:
        """Queue the request's write with the registry; a request that names no write fails at once."""
        operation = request.WhichOneof("operation")
        if operation == "create":
            return self._registry.submit(CreateOp(request.create.workload_endpoint), stream=self)
        if operation == "update":
            update = request.update
            update_op = UpdateOp(update.workload_endpoint, update.allow_missing, self._create_refused)
            return self._registry.submit(update_op, stream=self)
        try:
            if operation != "delete":
                raise InvalidArgument([FieldViolation("operation", "set one of create, update or delete")])
            delete = request.delete
            key = endpoint_key(delete.namespace, require_name(delete.name))
        except InvalidArgument as error:
            return _failed(error)
        return self._registry.submit(
            DeleteOp(key, delete.resource_version, delete.uid, delete.allow_missing), stream=self
        )


# What a request is answered with: its write's outcome, or its batch's writes (request_id, outcome) in order.
_Answer = asyncio.Future[Outcome] | list[tuple[str, asyncio.Future[Outcome]]]


def _failed(error: Exception) -> asyncio.Future[Outcome]:
    failed: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    failed.set_exception(error)
    return failed


async def _response(request_id: str, future: asyncio.Future[Outcome]) -> bytes:
    """The answer to one write, exactly as its unary method would have given it, in wire bytes."""
    try:
        outcome = await future
    except Exception as error:
        failure = status_error(error, f"WriteWorkloadEndpoints (request_id {request_id!r})")
        return write_result(request_id, failure.to_status().SerializeToString(), None, 0)
    if isinstance(outcome, Deleted):
        previous = outcome.previous
        encoded = None if previous is None else object_with_version(previous.value, previous.mod_revision)
        return write_result(request_id, _OK, encoded, outcome.revision)
    return write_result(request_id, _OK, object_with_version(outcome.value, outcome.mod_revision), outcome.mod_revision)
