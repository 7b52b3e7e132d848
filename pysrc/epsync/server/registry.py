"""The write path for every kind: writes from all callers gathered into batches, with optimistic concurrency.

Unary calls and write streams alike `submit` a write and get a future; the batcher (one callback per
kind and loop turn) takes everything queued, validates and normalises it, checks each write's
preconditions against the cache, and hands the whole batch to the datastore in ONE `write()` call
(one group commit, one cache and index apply, one publication to the watchers). No task per write:
a write is a queue entry and a future.

Order. Writes are taken in the order they were submitted. A write to a key that an earlier,
unfinished write is writing (in this batch or in one still committing) waits for it and is taken
in a later batch, and so does every later write of the same stream, so a stream's writes reach
the store in request order and each sees the ones before it (create A then delete A deletes what
the create stored). A batch is handed to the store and the next one is gathered while it
commits, so batches pipeline with the store's own group commit.

Concurrency. Each write compares-and-swaps on the mod revision it read (the shape of Kubernetes'
GuaranteedUpdate over etcd). If the swap loses a race (another replica wrote the key), the write
is retried against the winner's record, which the conflict hands back, unless the client pinned a
resource_version, in which case losing is the client's ABORTED. A time budget bounds the retries.
Server-owned metadata (uid, creation_timestamp) is set on create and carried over on every update,
so identity never changes.

No-op updates. An update whose stored bytes (validated, normalised, identity carried over) equal what
is stored changes nothing: no commit, no new revision, no event, and the caller gets the stored
object (Kubernetes' GuaranteedUpdate skips such writes too). The cache only suggests it: another
replica (etcd) or another worker process may have written the key since the cache heard of it, and
an update declared a no-op against a stale copy would lose the caller's write. So a suggested no-op
is confirmed by reading the key from the datastore: still the same revision, it is a no-op;
changed, the write is planned again against what the datastore holds (a compare-and-swap on it,
or a no-op if it holds the same bytes), like a lost race. The embedded store's owner could trust
its cache (no write is acknowledged before its cache has it, and the batcher keeps one write per
key in flight), but one read is cheap beside a commit, and one rule for every store is easier to
trust. A resource_version precondition is checked first: a mismatch is ABORTED, identical content
or not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

from epsync.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from epsync.model.kinds import PROFILES, WORKLOAD_ENDPOINTS, NormalizeItem, ResourceType
from epsync.server.histogram import Histogram
from epsync.store.base import Committed, Conflict, Datastore, Delete, Put, Record, WriteFailed, WriteResult
from epsync.sync.cache import ResourceCache
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

R = TypeVar("R", WorkloadEndpoint, Profile)

# How long one write may keep losing compare-and-swap races before it gives up with ABORTED.
_RETRY_BUDGET_SECONDS = 10.0
# The most writes one batch hands to the store.
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Deleted:
    previous: Record | None  # the object as it was stored; None when allow_missing found nothing
    revision: int  # the delete's revision


@dataclass(frozen=True, slots=True)
class CreateOp(Generic[R]):
    object: R


@dataclass(frozen=True, slots=True)
class UpdateOp(Generic[R]):
    object: R
    allow_missing: bool = False
    # Set: an update that would create the object is refused with FAILED_PRECONDITION and this message
    # (kubernetes mode: only the orchestrator creates endpoints). Decided where the commit is planned,
    # so no interleaving lets a create through.
    create_refused: str = ""


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    resource_version: int = 0
    uid: str = ""
    allow_missing: bool = False


Operation: TypeAlias = CreateOp[R] | UpdateOp[R] | DeleteOp
# An object as the cache or the datastore holds it: (resource_version, stored bytes); never decoded on the
# write path.
Stored: TypeAlias = tuple[int, bytes]
# A create or update's stored record (its value without resource_version, which is its mod_revision),
# or what a delete removed: answers are built from the stored bytes, never decoded and re-encoded.
Outcome: TypeAlias = Record | Deleted


@dataclass(slots=True, eq=False)
class _Pending(Generic[R]):
    """One submitted write on its way through the batcher."""

    operation: Operation[R]
    stream: Hashable | None  # writes of one stream keep their order; None: a unary call
    future: asyncio.Future[Outcome]
    arrived: float  # time.monotonic() when submitted
    deadline: float
    key: str | None = None  # what it writes, known before validation; None: it cannot be valid
    winner: Record | None = None  # set after a lost race: what won, fresher than the cache may be
    raced: bool = False
    write: Put | Delete | None = None
    # Set instead of `write` for an update that would store what the cache holds: the Put that would change
    # nothing, to be confirmed against the datastore (see the module docs).
    unchanged: Put | None = None


def _shutting_down() -> Unavailable:
    return Unavailable(
        "the server is shutting down; the write was not made: retry on another server", reason="SHUTTING_DOWN"
    )


class Registry(Generic[R]):
    """Writes for one kind, batched; reads the current state from the cache, writes through the datastore."""

    def __init__(self, rtype: ResourceType[R], store: Datastore, cache: ResourceCache) -> None:
        self.rtype: ResourceType[R] = rtype
        self._store = store
        self._cache = cache
        # Queued writes by lane: a stream's writes in order in its own lane, each unary write in a lane of its
        # own. A lane whose first write must wait holds the rest of it back; other lanes go on.
        self._lanes: dict[Hashable, deque[_Pending[R]]] = {}
        # The batcher: one callback per loop turn that takes what is queued (no task of its own, so a write that
        # arrives alone costs no task wake-up more than it must); None when none is scheduled.
        self._take_scheduled: asyncio.Handle | None = None
        self._closing = False
        self._busy_keys: set[str] = set()  # keys of writes handed to the store and not yet answered
        self._committing: set[asyncio.Task[None]] = set()
        self._commit_task_name = f"epsync-{rtype.kind.value}-commit"
        self.draining = False  # shutting down: no new writes (drain)
        # For the metrics: writes a commit carries, and seconds from a write's arrival to its answer.
        self.commit_groups = Histogram((1, 2, 5, 10, 20, 50, 100, 200, 500, 1000))
        self.write_seconds = Histogram((0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0))

    # --- reads ------------------------------------------------------------------------------------

    def current(self, key: str) -> R | None:
        return self._cache.get(self.rtype, key)

    def get(self, key: str) -> R:
        obj = self.current(key)
        if obj is None:
            raise NotFound(f"{self.rtype.describe(key)} not found")
        return obj

    # --- writes -----------------------------------------------------------------------------------

    async def create(self, obj: R) -> Record:
        return _stored(await self.submit(CreateOp(obj)))

    async def update(self, obj: R, *, allow_missing: bool = False, create_refused: str = "") -> Record:
        return _stored(await self.submit(UpdateOp(obj, allow_missing, create_refused)))

    async def delete(
        self, key: str, *, resource_version: int = 0, uid: str = "", allow_missing: bool = False
    ) -> Deleted:
        outcome = await self.submit(DeleteOp(key, resource_version, uid, allow_missing))
        assert isinstance(outcome, Deleted)
        return outcome

    def submit(self, operation: Operation[R], stream: Hashable | None = None) -> asyncio.Future[Outcome]:
        """Queue a write; the future resolves with its outcome or fails with the error the caller gets.

        Synchronous, so writes are queued in the order `submit` is called."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if self.draining:
            future.set_exception(_shutting_down())
            return future
        arrived = time.monotonic()
        pending = _Pending(operation, stream, future, arrived, arrived + _RETRY_BUDGET_SECONDS)
        pending.key = operation.key if isinstance(operation, DeleteOp) else self.rtype.request_key(operation.object)
        self._lanes.setdefault(pending if stream is None else stream, deque()).append(pending)
        self._schedule_take()
        return future

    def drain(self) -> None:
        """Take no new writes (each is answered UNAVAILABLE SHUTTING_DOWN); those queued still commit."""
        self.draining = True

    async def close(self) -> None:
        """Stop taking batches; writes already handed to the store finish first."""
        self._closing = True
        if self._take_scheduled is not None:
            self._take_scheduled.cancel()
            self._take_scheduled = None
        if self._committing:
            await asyncio.wait(self._committing)
        for lane in self._lanes.values():
            for pending in lane:
                if not pending.future.done():
                    self._fail(pending, _shutting_down())
        self._lanes.clear()
        self._closing = False

    # --- answers ----------------------------------------------------------------------------------

    # Every write taken is answered through these two, which also time it: no done-callback per write, which
    # would cost each write one more handle on the event loop.
    def _succeed(self, pending: _Pending[R], outcome: Outcome) -> None:
        pending.future.set_result(outcome)
        self.write_seconds.observe(time.monotonic() - pending.arrived)

    def _fail(self, pending: _Pending[R], error: BaseException) -> None:
        pending.future.set_exception(error)
        self.write_seconds.observe(time.monotonic() - pending.arrived)

    # --- the batcher ------------------------------------------------------------------------------

    def _schedule_take(self) -> None:
        """Take a batch on the next loop turn (once, however many writes come before it)."""
        if self._take_scheduled is None and not self._closing:
            self._take_scheduled = asyncio.get_running_loop().call_soon(self._take)

    def _take(self) -> None:
        self._take_scheduled = None
        batch = self._take_batch()
        if not batch:
            return
        self.commit_groups.observe(len(batch))
        # The task queues the batch on the store in its first step, and tasks start in the order they
        # are created: batches reach the store in the order they were taken.
        task = asyncio.get_running_loop().create_task(self._commit(batch), name=self._commit_task_name)
        self._committing.add(task)
        task.add_done_callback(self._committing.discard)
        if len(batch) == MAX_BATCH:
            self._schedule_take()

    def _take_batch(self) -> list[_Pending[R]]:
        """From each lane, in order, the writes that can go now, prepared; a lane stops at its first write whose
        key an unfinished write holds (one still committing, or one taken before it in this round)."""
        candidates: list[_Pending[R]] = []
        claimed: set[str] = set()
        contended = False  # a lane waits on a key taken this round: look again once the round is settled
        for lane_key, lane in list(self._lanes.items()):
            while lane and len(candidates) < MAX_BATCH:
                pending = lane[0]
                if pending.future.done():  # its caller went away
                    lane.popleft()
                    continue
                key = pending.key
                if key is not None and key in self._busy_keys:
                    break
                if key is not None and key in claimed:
                    contended = True
                    break
                lane.popleft()
                if key is not None:
                    claimed.add(key)
                candidates.append(pending)
            if not lane:
                del self._lanes[lane_key]
            if len(candidates) >= MAX_BATCH:
                break
        batch = self._prepare(candidates)
        self._busy_keys.update(p.key for p in batch if p.key is not None)
        if contended or len(candidates) >= MAX_BATCH:
            self._schedule_take()
        return batch

    def _prepare(self, candidates: list[_Pending[R]]) -> list[_Pending[R]]:
        """Decide each candidate's write from the current state: creates and updates validated, normalised and
        encoded in ONE call into the Rust core; writes that fail are answered here. Returns those to commit."""
        items: list[NormalizeItem] = []
        puts: list[tuple[_Pending[R], Stored | None]] = []
        for pending in candidates:
            pending.write = pending.unchanged = None
            operation = pending.operation
            try:
                current = self._current(pending)
                if isinstance(operation, DeleteOp):
                    self._plan_delete(pending, current)
                    continue
                request = operation.object.SerializeToString()
                if isinstance(operation, UpdateOp) and current is not None:
                    # An update keeps the object's identity, read by the Rust core from the stored bytes (not
                    # decoded here); a create (also by an upsert) gets a new one.
                    items.append((request, current[1]))
                else:
                    items.append((request, str(uuid.uuid4()), divmod(time.time_ns(), 1_000_000_000)))
                puts.append((pending, current))
            except Exception as error:  # a bad request, or a bug: either way this write's answer
                self._fail(pending, error)
        try:
            results = self.rtype.normalize_batch(items) if items else []
        except Exception as error:  # a bug in the core: these writes fail, the batcher goes on
            for pending, _ in puts:
                self._fail(pending, error)
            return [p for p in candidates if p.write is not None and not p.future.done()]
        for (pending, current), normalized in zip(puts, results, strict=True):
            try:
                if isinstance(normalized, list):
                    raise InvalidArgument([FieldViolation(path, description) for path, description in normalized])
                self._plan_put(pending, current, normalized)
            except Exception as error:
                self._fail(pending, error)
        return [p for p in candidates if (p.write is not None or p.unchanged is not None) and not p.future.done()]

    def _current(self, pending: _Pending[R]) -> Stored | None:
        """What the write is judged against, as stored: the winner of a race it lost, else the cache's object."""
        if pending.raced:
            winner = pending.winner
            if winner is None:
                return None
            _check_decodes(self.rtype, winner)  # the cache holds only values that decode; a winner is checked here
            return (winner.mod_revision, winner.value)
        return None if pending.key is None else self._cache.stored(self.rtype.kind, pending.key)

    def _plan_put(self, pending: _Pending[R], current: Stored | None, stored: bytes) -> None:
        """The compare-and-swap that stores `stored` (validated and normalised), or the error that answers it."""
        operation, key = pending.operation, pending.key
        # Validation passes only for writes whose key was known beforehand (see ResourceType.request_key).
        assert key is not None, "a write with no key passed validation"
        if isinstance(operation, CreateOp):
            if current is not None:
                raise AlreadyExists(f"{self.rtype.describe(key)} already exists")
            pending.write = Put(self.rtype.kind, key, stored, expected_mod_revision=0)
            return
        assert isinstance(operation, UpdateOp)
        precondition = operation.object.metadata.resource_version
        if precondition < 0:
            raise InvalidArgument([FieldViolation("metadata.resource_version", "must not be negative")])
        if current is None:
            if not operation.allow_missing:
                raise NotFound(f"{self.rtype.describe(key)} not found (set allow_missing to create it)")
            if operation.create_refused:
                raise FailedPrecondition(
                    f"{self.rtype.describe(key)} does not exist: {operation.create_refused}",
                    reason="OPERATION_NOT_SUPPORTED",
                )
            if precondition:
                raise Aborted(
                    f"{self.rtype.describe(key)} does not exist, so it cannot be at resource_version {precondition}"
                )
            pending.write = Put(self.rtype.kind, key, stored, expected_mod_revision=0)
            return
        version, current_value = current
        if precondition and precondition != version:
            raise _version_mismatch(self.rtype, key, precondition, version)
        put = Put(self.rtype.kind, key, stored, version)
        if stored != current_value:
            pending.write = put
        elif pending.raced and pending.winner is not None:
            # Just read from the datastore, so current: nothing to write.
            self._succeed(pending, pending.winner)
        else:
            pending.unchanged = put

    def _plan_delete(self, pending: _Pending[R], current: Stored | None) -> None:
        operation, key = pending.operation, pending.key
        assert isinstance(operation, DeleteOp)
        assert key is not None
        if operation.resource_version < 0:
            raise InvalidArgument([FieldViolation("resource_version", "must not be negative")])
        if current is None:
            if not operation.allow_missing or operation.resource_version or operation.uid:
                raise NotFound(f"{self.rtype.describe(key)} not found")
            if pending.raced:
                # The store said there is nothing to delete.
                self._succeed(pending, Deleted(None, self._cache.revision))
                return
            # The cache may not have heard of the object yet (another replica just created it):
            # the store, not the cache, says whether there is nothing to delete.
            pending.write = Delete(self.rtype.kind, key)
            return
        version, current_value = current
        rv = operation.resource_version
        if rv and rv != version:
            raise _version_mismatch(self.rtype, key, rv, version)
        if operation.uid:
            uid = self.rtype.decode(current_value, version).metadata.uid  # decoded only for this precondition
            if operation.uid != uid:
                raise Aborted(
                    f"{self.rtype.describe(key)} has uid {uid}, not {operation.uid}: it was deleted and created again"
                )
        pending.write = Delete(self.rtype.kind, key, version)

    async def _commit(self, batch: list[_Pending[R]]) -> None:
        writing = [p for p in batch if p.write is not None]
        writes = [p.write for p in writing if p.write is not None]
        retrying: set[_Pending[R]] = set()
        try:
            try:
                # Called first, before any other await: batches reach the store in the order they were taken.
                results: list[WriteResult | Exception] = list(await self._store.write(writes)) if writes else []
            except WriteFailed as error:
                # Each write failed or stood alone: answer each as it went.
                results = [o if not isinstance(o, Exception) else WriteFailed([o]) for o in error.outcomes]
            except Exception as error:
                for pending in writing:
                    if not pending.future.done():
                        self._fail(pending, error)
                results = []
                writing = []
            for pending, result in zip(writing, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, Exception):
                    self._fail(pending, result)
                    continue
                try:
                    outcome = self._interpret(pending, result)
                except Exception as error:
                    self._fail(pending, error)
                    continue
                if outcome is None:
                    retrying.add(pending)
                else:
                    self._succeed(pending, outcome)
            # After the writes are answered: they need not wait for these reads.
            retrying.update(await self._confirm_unchanged([p for p in batch if p.unchanged is not None]))
        finally:
            self._busy_keys.difference_update(p.key for p in batch if p.key is not None)
        retry = [p for p in batch if p in retrying]  # in the order they were taken
        for pending in reversed(retry):
            # At the head of its lane: the lane's later writes were submitted after it.
            lane_key = pending if pending.stream is None else pending.stream
            self._lanes.setdefault(lane_key, deque()).appendleft(pending)
        if self._lanes:
            self._schedule_take()

    async def _confirm_unchanged(self, checks: list[_Pending[R]]) -> list[_Pending[R]]:
        """Answer each update the cache says changes nothing with the datastore's record, if that is still the one
        the cache has; returns the others, to be planned again against the record read (see the module docs)."""
        if not checks:
            return []
        records = await asyncio.gather(
            *(self._store.get(self.rtype.kind, p.unchanged.key) for p in checks if p.unchanged is not None),
            return_exceptions=True,
        )
        retry: list[_Pending[R]] = []
        for pending, record in zip(checks, records, strict=True):
            put, pending.unchanged = pending.unchanged, None
            assert put is not None
            if pending.future.done():
                continue
            if isinstance(record, BaseException):
                self._fail(pending, record)
            elif record is not None and record.mod_revision == put.expected_mod_revision and record.value == put.value:
                self._succeed(pending, record)
            else:
                # Written meanwhile, where this cache had not heard of it yet: judge the update against what is stored.
                pending.raced, pending.winner = True, record
                retry.append(pending)
        return retry

    def _interpret(self, pending: _Pending[R], result: Committed | Conflict) -> Outcome | None:
        """The caller's outcome, or None to retry after a lost race."""
        operation, key = pending.operation, pending.key
        assert key is not None
        if isinstance(result, Committed):
            if isinstance(operation, DeleteOp):
                return Deleted(result.previous, result.revision)
            assert result.record is not None, "a committed put always has a record"
            return result.record
        if isinstance(operation, CreateOp):
            raise AlreadyExists(f"{self.rtype.describe(key)} already exists")
        pinned = (
            operation.resource_version
            if isinstance(operation, DeleteOp)
            else operation.object.metadata.resource_version
        )
        if pinned:
            raise _version_mismatch(self.rtype, key, pinned, _revision_of(result.current))
        if time.monotonic() >= pending.deadline:
            verb = "delete" if isinstance(operation, DeleteOp) else "update"
            raise Aborted(f"{self.rtype.describe(key)} is changing too fast to {verb}; retry")
        pending.raced, pending.winner = True, result.current
        return None


def _stored(outcome: Outcome) -> Record:
    assert not isinstance(outcome, Deleted)
    return outcome


def _check_decodes(rtype: ResourceType[R], record: Record) -> None:
    """FAILED_PRECONDITION unless `record` decodes as `rtype`'s message, by the rule the cache keeps values by."""
    if rtype.undecodable([record.value]):
        # Written by something other than epsync, or damaged: the cache leaves such a value out (sync/cache.py),
        # and a write cannot judge its preconditions against it.
        raise FailedPrecondition(
            f"the stored {rtype.describe(record.key)} does not decode (written by something other than epsync, or "
            "damaged); remove it from the datastore, then write again",
            reason="UNDECODABLE_STORED_OBJECT",
        )


def _revision_of(record: Record | None) -> int:
    return record.mod_revision if record is not None else 0


def _version_mismatch(rtype: ResourceType[R], key: str, expected: int, actual: int) -> Aborted:
    state = f"is at resource_version {actual}" if actual else "no longer exists"
    return Aborted(f"{rtype.describe(key)} {state}, not {expected}: re-read it and retry")


def endpoint_registry(store: Datastore, cache: ResourceCache) -> Registry[WorkloadEndpoint]:
    return Registry(WORKLOAD_ENDPOINTS, store, cache)


def profile_registry(store: Datastore, cache: ResourceCache) -> Registry[Profile]:
    return Registry(PROFILES, store, cache)
