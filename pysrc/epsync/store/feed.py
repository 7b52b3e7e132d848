"""The change feed's shared parts: what every datastore and the cache it feeds do the same way.

- `RevisionWaiters` is "wait until revision R has been delivered": a writer waiting for its own
  write to reach the listeners, a read waiting for `min_resource_version`. Whoever advances the
  revision calls `advance`, on the event loop thread; waiters are woken in that same call.
- `ChangeFeed` is a datastore's side of the listener contract in base.py: the listeners, the
  revision they have been given, and `publish`, which hands them one committed batch, logs a
  listener's exception rather than let it touch the commit, and wakes whoever waits for the batch.
- `HealthSignal` is a store's `healthy` and the listeners told when it changes.
- `CommitQueue` is the front half of group commit: each `write()` call joins the queue whole and
  awaits its outcomes; the backend's committer task takes the calls as groups, in the order they
  were made, and settles each call once its group is done. The backends differ only in what
  committing a group means (one SQLite transaction; as few etcd transactions as etcd allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from epsync.store.base import (
    Change,
    ChangeListener,
    DatastoreUnavailable,
    HealthListener,
    Write,
    WriteFailed,
    WriteResult,
)

log = logging.getLogger(__name__)

# One `write()` call's outcome: per write, its result, or the exception it failed with.
Outcomes = list[WriteResult | Exception]


class RevisionNotReached(Exception):
    """`wait` gave up: the revision did not arrive in time. `current` is where the waited-on thing is."""

    def __init__(self, wanted: int, current: int, within_seconds: float) -> None:
        self.wanted = wanted
        self.current = current
        self.within_seconds = within_seconds
        super().__init__(f"at revision {current}, not {wanted}, after {within_seconds:g}s")


class RevisionWaiters:
    """Futures waiting for a revision, woken when `advance` reaches it."""

    def __init__(self, revision: int = 0) -> None:
        self.revision = revision
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def advance(self, revision: int) -> None:
        """The revision has reached `revision` (it never goes back): wake everyone waiting for it or less."""
        if revision <= self.revision:
            return
        self.revision = revision
        if not self._waiting:
            return
        still_waiting = []
        for wanted, waiter in self._waiting:
            if waiter.done():  # its caller gave up or was cancelled
                continue
            if wanted <= revision:
                waiter.set_result(None)
            else:
                still_waiting.append((wanted, waiter))
        self._waiting = still_waiting

    def reset(self, revision: int) -> None:
        """Start again from `revision` (a new snapshot): may go back; waiters wait on."""
        self.revision = revision

    def fail(self, error: Exception) -> None:
        """Give up on everyone waiting now: each `wait` raises `error`."""
        waiting, self._waiting = self._waiting, []
        for _, waiter in waiting:
            if not waiter.done():
                waiter.set_exception(error)

    async def wait(self, revision: int, within_seconds: float | None = None) -> None:
        """Return once `revision` has been reached; RevisionNotReached after `within_seconds` (None: no limit)."""
        if self.revision >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((revision, waiter))
        if within_seconds is None:
            await waiter
            return
        try:
            await asyncio.wait_for(waiter, within_seconds)
        except TimeoutError:
            raise RevisionNotReached(revision, self.revision, within_seconds) from None


class ChangeFeed:
    """A datastore's listeners, the revision they have been given, and whoever waits for a revision."""

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []
        self._delivered = RevisionWaiters()

    @property
    def revision(self) -> int:
        """The revision of the last batch published (or where `reset` or `advance` put it)."""
        return self._delivered.revision

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def reset(self, revision: int) -> None:
        """Start from `revision`: the store has opened (or re-read everything) there."""
        self._delivered.reset(revision)

    def publish(self, changes: Sequence[Change]) -> None:
        """Hand one committed batch (ascending revisions, not empty) to every listener, in order.

        The revision moves first, so a listener that asks the store sees the batch's; the woken
        waiters resume only after this call returns, so after every listener has had the batch.
        """
        revision = changes[-1].revision
        self._delivered.advance(revision)
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:
                log.exception("datastore listener %r failed at revision %d", listener, revision)

    def advance(self, revision: int) -> None:
        """Move to `revision` without a batch: nothing of this store changed up to it."""
        self._delivered.advance(revision)

    async def wait(self, revision: int, within_seconds: float | None = None) -> None:
        """Return once the listeners have had `revision`; RevisionNotReached after `within_seconds`."""
        await self._delivered.wait(revision, within_seconds)

    def fail_waiters(self, error: Exception) -> None:
        """The store is closing: everyone waiting for a revision gets `error`."""
        self._delivered.fail(error)


class HealthSignal:
    """Whether a store can take writes now, and whoever is told each time that changes."""

    def __init__(self, healthy: bool = False) -> None:
        self.healthy = healthy
        self._listeners: list[HealthListener] = []

    def add_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def set(self, healthy: bool) -> None:
        """Set it; tell the listeners if it changed (a listener's exception is logged, not raised)."""
        if healthy == self.healthy:
            return
        self.healthy = healthy
        for listener in list(self._listeners):
            try:
                listener(healthy)
            except Exception:
                log.exception("datastore health listener %r failed", listener)


@dataclass(slots=True)
class QueuedCall:
    """One `write()` call waiting for its group: its writes, and the future its outcomes go to."""

    writes: list[Write]
    future: asyncio.Future[Outcomes]

    def settle(self, outcomes: Outcomes) -> None:
        """Hand the call its outcomes, one per write."""
        if not self.future.done():  # the caller gave up waiting; the writes stand regardless
            self.future.set_result(outcomes)


class CommitQueue:
    """The `write()` calls waiting to be committed, taken as groups of whole calls in the order they were made."""

    def __init__(self, max_group: int) -> None:
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.max_group = max_group
        self._calls: deque[QueuedCall] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False

    async def submit(self, writes: list[Write]) -> Outcomes:
        """Queue one call (before the first await, so calls queue in the order they are made); its outcomes."""
        future: asyncio.Future[Outcomes] = asyncio.get_running_loop().create_future()
        self._calls.append(QueuedCall(writes, future))
        self._wakeup.set()
        return await future

    def close(self) -> None:
        """Take no more calls; `next_group` goes on until the queue is drained, then says so."""
        self._closing = True
        self._wakeup.set()

    async def next_group(self, idle_seconds: float | None = None) -> list[QueuedCall] | None:
        """The next group: whole calls, first come first, up to `max_group` writes (a larger call goes alone).

        Waits while nothing is queued. With `idle_seconds`, returns an empty group if nothing came
        within that time (or the queue was closed meanwhile), for a committer that has something to
        check between groups. Returns None once the queue is closed and drained.
        """
        while not self._calls:
            if self._closing:
                return None
            self._wakeup.clear()
            if idle_seconds is None:
                await self._wakeup.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), idle_seconds)
            break
        group: list[QueuedCall] = []
        size = 0
        while self._calls:
            n = len(self._calls[0].writes)
            if group and size + n > self.max_group:
                break  # a call is never split across groups
            group.append(self._calls.popleft())
            size += n
        return group


def results_of(outcomes: Outcomes) -> list[WriteResult]:
    """What `Datastore.write` returns for a call's outcomes, or raises: the DatastoreUnavailable that
    failed every write of it, or WriteFailed when some writes failed and others stand."""
    results = [o for o in outcomes if not isinstance(o, Exception)]
    if len(results) == len(outcomes):
        return results
    failures = [o for o in outcomes if isinstance(o, Exception)]
    if not results and all(isinstance(f, DatastoreUnavailable) for f in failures):
        raise failures[0]
    raise WriteFailed(outcomes)
