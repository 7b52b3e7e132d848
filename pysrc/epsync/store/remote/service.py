"""The owner's side: its datastore served to the worker processes on a Unix socket.

Each worker follows the owner's change feed through one `Follow` stream: a snapshot, then every
committed batch after it. The service is one listener of the datastore, registered once, that
hands each batch to every follower's queue; a follower's stream registers its queue, takes the
snapshot with no await in between (the listener contract of store/base.py), sends it in parts,
then sends the queued batches newer than it. A follower that falls `max_pending` batches behind
is cut off (RESOURCE_EXHAUSTED); its worker starts again from a new snapshot, as a watcher that
falls behind does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc

from epsync.internal.v1 import store_pb2 as pb
from epsync.internal.v1 import store_pb2_grpc as pb_grpc
from epsync.store.base import (
    Change,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    RevisionCompacted,
    WriteFailed,
    WriteResult,
)
from epsync.store.remote import codec

log = logging.getLogger(__name__)

# Records per snapshot part and changes per history page: a few MiB per message at most for
# endpoints of a few KiB, far below the socket's message limit.
PART_RECORDS = 1000
# The owner and its workers exchange whole snapshots parts and batches; endpoints are bounded by
# the API's message limit, so this is generous for one part of PART_RECORDS of them.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


# Trailing metadata of an OUT_OF_RANGE ChangesSince: the oldest revision history can resume from.
OLDEST_REVISION_KEY = "epsync-oldest-revision"
# Trailing metadata of a failure the owner's datastore raised: "unavailable" or "error".
STORE_ERROR_KEY = "epsync-store-error"


class _Follower:
    """One worker's Follow stream: the steps not yet sent, and whether it was cut off."""

    def __init__(self, max_pending: int) -> None:
        self.pending: asyncio.Queue[pb.FollowResponse] = asyncio.Queue()
        self.max_pending = max_pending
        self.cut_off = False

    def offer(self, step: pb.FollowResponse) -> None:
        if self.cut_off:
            return
        if self.pending.qsize() >= self.max_pending:
            self.cut_off = True
        self.pending.put_nowait(step)  # after a cut-off, this wakes the stream to end it


class StoreService(pb_grpc.StoreServiceServicer):
    """`store` (open) served to followers; `max_pending`: batches a follower may fall behind."""

    def __init__(self, store: Datastore, max_pending: int = 10_000) -> None:
        self.store = store
        self.max_pending = max_pending
        self._followers: set[_Follower] = set()
        store.add_listener(self.publish_changes)
        store.add_health_listener(self._health_changed)

    @property
    def followers(self) -> int:
        return len(self._followers)

    def publish_changes(self, changes: Sequence[Change]) -> None:
        """The store's listener: one committed batch, to every follower."""
        if not self._followers:
            return
        # Built once, sent to every follower.
        step = pb.FollowResponse(
            batch=pb.ChangeBatch(changes=[codec.change_to_pb(c) for c in changes]),
            oldest_revision=self.store.oldest_revision,
        )
        for follower in self._followers:
            follower.offer(step)

    def _health_changed(self, healthy: bool) -> None:
        step = pb.FollowResponse(healthy=healthy, oldest_revision=self.store.oldest_revision)
        for follower in self._followers:
            follower.offer(step)

    async def Follow(
        self, request: pb.FollowRequest, context: grpc.aio.ServicerContext[pb.FollowRequest, pb.FollowResponse]
    ) -> AsyncIterator[pb.FollowResponse]:
        follower = _Follower(self.max_pending)
        self._followers.add(follower)  # before the snapshot, with no await in between
        try:
            snapshot = await self.store.snapshot()
            oldest = self.store.oldest_revision
            records = snapshot.records
            for start in range(0, len(records), PART_RECORDS):
                part = [codec.record_to_pb(r) for r in records[start : start + PART_RECORDS]]
                yield pb.FollowResponse(snapshot_part=pb.SnapshotPart(records=part), oldest_revision=oldest)
            identity = self.store.identity
            yield pb.FollowResponse(
                snapshot_revision=snapshot.revision,
                oldest_revision=oldest,
                identity=pb.StoreIdentity(store_id=identity.store_id, secret=identity.secret),
            )
            yield pb.FollowResponse(healthy=self.store.healthy, oldest_revision=oldest)
            while True:
                step = await follower.pending.get()
                if follower.cut_off:
                    await context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"this follower fell {self.max_pending} batches behind the owner's store; follow again",
                    )
                if step.WhichOneof("step") == "batch" and step.batch.changes[-1].revision <= snapshot.revision:
                    continue  # the snapshot has it
                yield step
        finally:
            self._followers.discard(follower)

    async def Get(
        self, request: pb.GetRequest, context: grpc.aio.ServicerContext[pb.GetRequest, pb.GetResponse]
    ) -> pb.GetResponse:
        try:
            record = await self.store.get(codec.kind_of(request.kind), request.key)
        except DatastoreError as error:
            await _abort(context, error)
        return pb.GetResponse(record=None if record is None else codec.record_to_pb(record))

    async def Write(
        self, request: pb.WriteRequest, context: grpc.aio.ServicerContext[pb.WriteRequest, pb.WriteResponse]
    ) -> pb.WriteResponse:
        try:
            writes = [codec.write_from_pb(w) for w in request.writes]
            outcomes: Sequence[WriteResult | Exception] = await self.store.write(writes)
        except WriteFailed as failed:
            outcomes = failed.outcomes
        except (ValueError, TypeError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except DatastoreError as error:
            await _abort(context, error)
        return pb.WriteResponse(outcomes=[codec.outcome_to_pb(o) for o in outcomes])

    async def ChangesSince(
        self,
        request: pb.ChangesSinceRequest,
        context: grpc.aio.ServicerContext[pb.ChangesSinceRequest, pb.ChangesSinceResponse],
    ) -> AsyncIterator[pb.ChangesSinceResponse]:
        try:
            changes = await self.store.changes_since(request.revision, request.limit or None)
        except RevisionCompacted as error:
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, str(error), ((OLDEST_REVISION_KEY, str(error.oldest)),))
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except DatastoreError as error:
            await _abort(context, error)
        for start in range(0, len(changes), PART_RECORDS):
            page = [codec.change_to_pb(c) for c in changes[start : start + PART_RECORDS]]
            yield pb.ChangesSinceResponse(changes=page)

    async def Compact(
        self, request: pb.CompactRequest, context: grpc.aio.ServicerContext[pb.CompactRequest, pb.CompactResponse]
    ) -> pb.CompactResponse:
        try:
            oldest = await self.store.compact(request.keep)
        except ValueError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except DatastoreError as error:
            await _abort(context, error)
        return pb.CompactResponse(oldest_revision=oldest)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: DatastoreError) -> None:
    """The store's failure, as the status the worker turns back into the same exception: marked as
    the store's, so that the worker tells it from a failure to reach the owner at all."""
    if isinstance(error, DatastoreUnavailable):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(error), ((STORE_ERROR_KEY, "unavailable"),))
    await context.abort(grpc.StatusCode.INTERNAL, str(error), ((STORE_ERROR_KEY, "error"),))


async def serve_store(store: Datastore, socket_path: Path) -> tuple[grpc.aio.Server, StoreService]:
    """Serve `store` (open) on the Unix socket `socket_path`; the started server and its service."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    service = StoreService(store)
    pb_grpc.add_StoreServiceServicer_to_server(service, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    log.debug("the owner's store is served on %s", socket_path)
    return server, service
