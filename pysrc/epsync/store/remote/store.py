"""A worker's datastore: the owner process's, over its Unix socket (service.py is the other end).

The snapshot and the change feed come down one `Follow` stream; `open()` reads the snapshot,
`snapshot()` hands it over and only then starts passing the batches after it to the listeners,
so a consumer that loads the snapshot and then applies the batches holds the owner's state.
Writes go to the owner, which commits them; `write()` returns once this process's listeners have
had the writes' revision (read-your-writes through the worker's cache), as the etcd store does.
The calls are grouped as the embedded store groups its commits (CommitQueue): one task sends
every call queued so far in one request, and gathers the next group while that one is answered,
so a worker makes one call to the owner per group, not per write (a call costs the owner about
as much as committing a few dozen writes).

The feed cannot be resumed: if the stream ends (the owner is gone, or cut this follower off for
falling behind), the store turns unhealthy for good and `lost` is set; the worker process then
exits and starts again from a new snapshot. Writes fail with DatastoreUnavailable meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import cast

import grpc

from epsync.internal.v1 import store_pb2 as pb
from epsync.internal.v1 import store_pb2_grpc as pb_grpc
from epsync.store.base import (
    Change,
    ChangeListener,
    Committed,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    HealthListener,
    Kind,
    Record,
    RevisionCompacted,
    Snapshot,
    StoreIdentity,
    Write,
    WriteResult,
    check_write,
)
from epsync.store.feed import ChangeFeed, CommitQueue, HealthSignal, Outcomes, RevisionNotReached, results_of
from epsync.store.remote import codec
from epsync.store.remote.service import MAX_MESSAGE_BYTES, OLDEST_REVISION_KEY, STORE_ERROR_KEY

log = logging.getLogger(__name__)


class RemoteDatastore(Datastore):
    """The owner's datastore at `socket_path`. `request_timeout`: each call; `catch_up_seconds`:
    how long a committed write waits for the feed to bring it; `open_seconds`: how long `open`
    waits for the owner to answer and send its snapshot; `max_group`: the most writes sent in one call."""

    def __init__(
        self,
        socket_path: Path,
        *,
        request_timeout: float = 10.0,
        catch_up_seconds: float = 5.0,
        open_seconds: float = 60.0,
        max_group: int = 5000,
    ) -> None:
        self.socket_path = socket_path
        self.request_timeout = request_timeout
        self.catch_up_seconds = catch_up_seconds
        self.open_seconds = open_seconds
        self._where = f"the owner process's store at {socket_path}"
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.StoreServiceAsyncStub | None = None
        self._follow: grpc.aio.UnaryStreamCall[pb.FollowRequest, pb.FollowResponse] | None = None
        self._steps: AsyncIterator[pb.FollowResponse] | None = None
        self._snapshot: Snapshot | None = None  # read by open() or a re-follow, not yet handed over
        self._reader: asyncio.Task[None] | None = None
        self._feed = ChangeFeed()
        self._oldest = 0
        self._health = HealthSignal()
        self._identity: StoreIdentity | None = None
        self._closing = False
        self._queue = CommitQueue(max_group)
        self._sender: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._channel is not None:
            raise DatastoreError(f"{self._where} is already open")
        self._channel = grpc.aio.insecure_channel(
            f"unix:{self.socket_path}",
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self._stub = pb_grpc.StoreServiceStub(self._channel)
        self._closing = False
        try:
            await self._start_following()
        except DatastoreError:
            await self._channel.close(grace=None)
            self._channel = None
            raise
        self._queue = CommitQueue(self._queue.max_group)
        self._sender = asyncio.get_running_loop().create_task(self._send_loop(), name="epsync-store-writes")

    async def _start_following(self) -> None:
        """A new Follow stream, read up to the end of its snapshot (kept for `snapshot()`)."""
        assert self._stub is not None
        follow: grpc.aio.UnaryStreamCall[pb.FollowRequest, pb.FollowResponse] = self._stub.Follow(
            pb.FollowRequest(), wait_for_ready=True
        )
        steps = aiter(follow)
        records: list[Record] = []
        snapshot: Snapshot | None = None
        try:
            async with asyncio.timeout(self.open_seconds):
                async for step in steps:
                    self._oldest = step.oldest_revision
                    which = step.WhichOneof("step")
                    if which == "snapshot_part":
                        records.extend(codec.record_from_pb(r) for r in step.snapshot_part.records)
                    elif which == "snapshot_revision":
                        snapshot = Snapshot(step.snapshot_revision, records)
                        self._identity = StoreIdentity(step.identity.store_id, step.identity.secret)
                    elif which == "healthy" and snapshot is not None:  # the owner's health, right after it
                        self._health.healthy = step.healthy  # nobody listens yet: open() is not done
                        break
                else:
                    raise DatastoreUnavailable(f"{self._where} ended the feed before its snapshot")
        except TimeoutError:
            follow.cancel()
            raise DatastoreUnavailable(f"{self._where} sent no snapshot within {self.open_seconds:g}s") from None
        except grpc.aio.AioRpcError as error:
            raise DatastoreUnavailable(f"{self._where} is unavailable: {error.details()}") from None
        self._follow, self._steps, self._snapshot = follow, steps, snapshot
        self._feed.reset(snapshot.revision)

    async def close(self) -> None:
        if self._channel is None:
            return
        self._closing = True
        self._queue.close()
        if self._sender is not None:
            await self._sender  # sends every write accepted before close
            self._sender = None
        await self._stop_reader()
        self._feed.fail_waiters(DatastoreUnavailable(f"{self._where} is closed"))
        await self._channel.close(grace=None)
        self._channel = self._stub = None

    async def _stop_reader(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        self._follow = self._steps = None

    # ----------------------------------------------------------------- the feed

    async def snapshot(self) -> Snapshot:
        self._require_open()
        if self._snapshot is None:  # handed over before: follow again from a new one
            await self._stop_reader()
            await self._start_following()
        snapshot, self._snapshot = self._snapshot, None
        assert snapshot is not None
        assert self._steps is not None
        self._reader = asyncio.get_running_loop().create_task(self._read(self._steps), name="epsync-store-follow")
        return snapshot

    async def _read(self, steps: AsyncIterator[pb.FollowResponse]) -> None:
        """Pass each batch of the feed to the listeners, and the owner's health, until the stream ends."""
        why = "the owner ended the feed"
        try:
            async for step in steps:
                self._oldest = step.oldest_revision
                which = step.WhichOneof("step")
                if which == "batch":
                    self._feed.publish(codec.changes_from_pb(step.batch.changes))
                elif which == "healthy":
                    self._health.set(step.healthy and not self.lost.is_set())
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as error:
            why = f"{error.code().name}: {error.details()}"
        except DatastoreError as error:
            why = str(error)
        if self._closing:
            return
        log.error("lost the feed of %s at revision %d (%s)", self._where, self.current_revision, why)
        self._health.set(False)
        self._feed.fail_waiters(DatastoreUnavailable(f"{self._where} is unavailable: {why}"))
        self.lost.set()

    def add_listener(self, listener: ChangeListener) -> None:
        self._feed.add_listener(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._health.add_listener(listener)

    @property
    def identity(self) -> StoreIdentity:
        if self._identity is None:
            raise DatastoreUnavailable(f"{self._where} is not open")
        return self._identity

    @property
    def healthy(self) -> bool:
        return self._health.healthy

    @property
    def current_revision(self) -> int:
        return self._feed.revision

    @property
    def oldest_revision(self) -> int:
        return self._oldest

    # ----------------------------------------------------------------- calls to the owner

    async def get(self, kind: Kind, key: str) -> Record | None:
        stub = self._require_open()
        try:
            response = await stub.Get(pb.GetRequest(kind=kind.value, key=key), timeout=self.request_timeout)
        except grpc.aio.AioRpcError as error:
            raise self._failure(error, "reading") from None
        return codec.record_from_pb(response.record) if response.HasField("record") else None

    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        writes = list(writes)
        for one in writes:
            check_write(one)
        self._require_open()
        if not writes:
            return []
        if self.lost.is_set():
            raise DatastoreUnavailable(f"{self._where} is unavailable: this worker lost its feed")
        outcomes = await self._queue.submit(writes)
        committed = [o.revision for o in outcomes if isinstance(o, Committed)]
        if committed and max(committed) > self.current_revision:
            try:
                await self._feed.wait(max(committed), self.catch_up_seconds)
            except RevisionNotReached as error:
                raise DatastoreUnavailable(
                    f"the write did commit in {self._where} (revision {max(committed)}), but this worker is at "
                    f"revision {error.current} after {self.catch_up_seconds:g}s; the outcome is known: committed"
                ) from None
        return results_of(outcomes)

    async def _send_loop(self) -> None:
        """Send the queued calls to the owner, a group per request, one request at a time."""
        stub = self._stub
        assert stub is not None
        while (calls := await self._queue.next_group()) is not None:
            writes = [write for call in calls for write in call.writes]
            outcomes: Outcomes
            try:
                request = pb.WriteRequest(writes=[codec.write_to_pb(w) for w in writes])
                response = await stub.Write(request, timeout=self.request_timeout)
                outcomes = codec.outcomes_from_pb(response.outcomes)
                if len(outcomes) != len(writes):
                    raise DatastoreError(f"{self._where} answered {len(outcomes)} outcomes to {len(writes)} writes")
            except grpc.aio.AioRpcError as error:
                outcomes = [self._failure(error, "writing", outcome_unknown=True)] * len(writes)
            except Exception as error:  # a bug: fail the group rather than strand its writers
                log.exception("sending writes to %s failed", self._where)
                outcomes = [DatastoreUnavailable(f"internal error sending writes: {error!r}; the outcome is unknown")]
                outcomes *= len(writes)
            start = 0
            for call in calls:
                call.settle(outcomes[start : start + len(call.writes)])
                start += len(call.writes)

    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        stub = self._require_open()
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        request = pb.ChangesSinceRequest(revision=revision, limit=limit or 0)
        changes: list[Change] = []
        call: grpc.aio.UnaryStreamCall[pb.ChangesSinceRequest, pb.ChangesSinceResponse] = stub.ChangesSince(
            request, timeout=self.request_timeout
        )
        try:
            async for page in call:
                changes.extend(codec.changes_from_pb(page.changes))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.OUT_OF_RANGE:
                oldest = _trailing(error, OLDEST_REVISION_KEY)
                raise RevisionCompacted(int(oldest or 0), revision) from None
            raise self._failure(error, "reading history from") from None
        return changes

    async def compact(self, keep: int) -> int:
        stub = self._require_open()
        try:
            response = await stub.Compact(pb.CompactRequest(keep=keep), timeout=self.request_timeout)
        except grpc.aio.AioRpcError as error:
            raise self._failure(error, "compacting") from None
        oldest: int = response.oldest_revision
        self._oldest = max(self._oldest, oldest)
        return oldest

    def _require_open(self) -> pb_grpc.StoreServiceAsyncStub:
        if self._stub is None or self._closing:
            raise DatastoreUnavailable(f"{self._where} is closed")
        return self._stub

    def _failure(self, error: grpc.aio.AioRpcError, doing: str, *, outcome_unknown: bool = False) -> Exception:
        """The owner's answer as the exception its store raised: the same class, the same message."""
        code, details = error.code(), error.details() or ""
        raised = _trailing(error, STORE_ERROR_KEY)
        if raised == "unavailable":
            return DatastoreUnavailable(details)
        if raised == "error":
            return DatastoreError(details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return ValueError(details)
        unknown = "; the outcome is unknown" if outcome_unknown else ""
        return DatastoreUnavailable(f"{doing} {self._where} failed: {code.name} {details}{unknown}")


def _trailing(error: grpc.aio.AioRpcError, key: str) -> str | None:
    """One value of the call's trailing metadata, or None."""
    # grpc.aio gives (key, value) pairs, whatever grpc-stubs says of the synchronous API's metadata.
    pairs = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for name, value in pairs:
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None
