"""Group commit for the SQLite store: the writer thread, and the committer task that feeds it and
publishes what it committed.

- One writer connection, used only from one dedicated thread. Every `write()` call joins the
  CommitQueue (feed.py); the committer task on the event loop takes the queued calls (whole calls,
  up to `max_group` writes) and has the writer thread apply them in ONE transaction (apply.py), so
  one fsync covers the group, and while the writer thread fsyncs, the next group accumulates.
- The committer publishes each committed group on the event loop thread: it moves the feed's
  revision, calls the listeners, and only then settles the writers' calls. So revisions reach
  listeners in commit order and a writer can read its own write from a cache fed by a listener.
- A snapshot read holds publication back (`hold`); committed groups wait in order until
  `release` publishes those the snapshot saw, and the rest go out once its caller has applied it.
- A COMMIT that fails may still have landed. The writer re-reads the stored revision: a group that
  is stored is published as committed; when even that cannot be told, the outcome is unknown, and
  before the next group (or, if none comes, after a short wait) the writer reads again and
  publishes whatever did land, so listeners never miss a durable change.
- History beyond `history_window` revisions is trimmed inside an ordinary group commit, once it is
  `_COMPACT_SLACK` past the window, so each pass deletes a bounded number of rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from epsync.store.base import Change, DatastoreFull, DatastoreUnavailable, StoreIdentity, Write
from epsync.store.feed import ChangeFeed, CommitQueue, HealthSignal, Outcomes, QueuedCall, RevisionWaiters
from epsync.store.sqlite.apply import apply_group
from epsync.store.sqlite.schema import (
    ConnectionThread,
    OpenedWriter,
    meta_value,
    open_writer,
    read_history,
    trim_history,
)

log = logging.getLogger(__name__)

# Automatic compaction trims history once it is this many revisions past the window.
_COMPACT_SLACK = 1000
# With a commit's outcome unknown and no writes coming, how long before the writer looks anyway.
_RECHECK_SECONDS = 0.5


@dataclass(slots=True)
class _Group:
    """What the writer thread did with one group, handed back to the event loop."""

    calls: list[QueuedCall]
    outcomes: list[Outcomes] = field(default_factory=list)  # per call, per write
    changes: list[Change] = field(default_factory=list)  # to publish, ascending
    recovered: list[Change] = field(default_factory=list)  # earlier revisions that landed despite a failed COMMIT
    error: str | None = None  # the whole group failed with this message
    uncertain: bool = False  # ... and it may have landed: check before the next group
    full: bool = False  # ... because the disk is full
    revision: int = 0  # the stored revision after the group
    compacted: int = 0

    def fail(self, error: str, *, uncertain: bool = False, cause: BaseException | None = None) -> None:
        self.error = error
        self.uncertain = uncertain
        self.full = cause is not None and disk_full(cause)
        self.outcomes = []
        self.changes = []


def disk_full(error: BaseException) -> bool:
    """Whether SQLite failed for want of space (SQLITE_FULL, "database or disk is full")."""
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(error)


class GroupCommitter:
    """The writer thread and connection, and the committer task that takes the queue's groups to it.

    `connection_class` is the sqlite3.Connection (sub)class the writer connects with.
    """

    def __init__(
        self,
        path: Path,
        feed: ChangeFeed,
        *,
        history_window: int,
        max_group: int,
        connection_class: type[sqlite3.Connection] = sqlite3.Connection,
        expect_existing: bool = False,
    ) -> None:
        self.path = path
        self.history_window = history_window
        self.max_group = max_group
        self.connection_class = connection_class
        self.expect_existing = expect_existing
        self.oldest = 0  # oldest_revision as last published
        self.groups_committed = 0
        self.writes_committed = 0  # writes in committed groups, conflicts included
        # Event-loop state.
        self._feed = feed
        self.health = HealthSignal(True)  # false while commits fail (a full disk), true again after one succeeds
        self._queue = CommitQueue(max_group)
        self._task: asyncio.Task[None] | None = None
        self._arrived = RevisionWaiters()  # the last revision back from the writer (published or held)
        self._holding = False  # a snapshot is reading: committed groups wait in _held
        self._held: list[_Group] = []
        self._uncertain = False
        # Writer-thread state: only touched on the writer thread once open.
        self._writer: ConnectionThread[OpenedWriter] | None = None
        self._w_revision = 0  # the revision the writer knows is stored and handed to the loop
        self._w_compacted = 0
        self._w_suspect = False  # a commit failed with an unknown outcome; re-read before the next group
        self.identity: StoreIdentity | None = None  # read from the file by open()

    # ----------------------------------------------------------------- lifecycle (event loop)

    async def open(self) -> int:
        """Start the writer thread and open the database on it; returns the stored revision."""
        self._writer = ConnectionThread("epsync-writer")
        writer = await self._writer.open(lambda: open_writer(self.path, self.connection_class, self.expect_existing))
        self._w_revision, self._w_compacted, self._w_suspect = writer.revision, writer.compacted, False
        self._arrived = RevisionWaiters(writer.revision)
        self.oldest = writer.compacted
        self.identity = writer.identity
        self._uncertain = False
        self._holding, self._held = False, []
        return writer.revision

    def start(self) -> None:
        """Start taking groups from the queue."""
        self._queue = CommitQueue(self.max_group)
        self._task = asyncio.get_running_loop().create_task(self._commit_loop(), name="epsync-store-committer")

    async def submit(self, writes: list[Write]) -> Outcomes:
        """Queue one call and await its outcomes (once its group is committed and published)."""
        return await self._queue.submit(writes)

    async def drain(self) -> None:
        """Take no more calls; return once every call already queued is committed."""
        self._queue.close()
        if self._task is not None:
            await self._task
            self._task = None

    async def close(self) -> None:
        """Close the connection (and with it the lock file) and stop the writer thread."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    def _writer_conn(self) -> sqlite3.Connection:
        """The writer's connection, on the writer thread."""
        assert self._writer is not None
        return self._writer.connection.conn

    # ----------------------------------------------------------------- snapshots (event loop)

    def hold(self) -> None:
        """A snapshot starts reading: committed groups wait to be published until `release`."""
        self._holding = True

    async def wait_arrived(self, revision: int) -> None:
        """Return once the group with `revision` is back from the writer thread (published or held)."""
        await self._arrived.wait(revision)

    def release(self, up_to: int | None) -> None:
        """The snapshot is read (at `up_to`; None: it failed). Publish, now, exactly the held groups
        it covers; the rest go out after the caller (resumed synchronously) has applied it."""
        self._holding = False
        self.publish_held(up_to)
        if self._held:
            asyncio.get_running_loop().call_soon(self.publish_held)

    def publish_held(self, up_to: int | None = None) -> None:
        """Publish held groups in order: those at or below `up_to` if given, else all (unless a snapshot holds)."""
        while self._held:
            group = self._held[0]
            if up_to is None and self._holding:
                break
            if up_to is not None and group.changes and group.changes[-1].revision > up_to:
                break
            self._held.pop(0)
            self._publish(group)

    # ----------------------------------------------------------------- compaction

    async def compact(self, target: int) -> int:
        """Trim history up to `target`, between groups; returns the new oldest revision."""
        assert self._writer is not None
        compacted = await self._writer.run(lambda: self._compact_now(target))
        self.oldest = max(self.oldest, compacted)
        return self.oldest

    def _compact_now(self, target: int) -> int:
        """On the writer thread: trim history up to `target` in its own transaction."""
        conn = self._writer_conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            compacted = meta_value(conn, "compacted")
            if target > compacted:
                trim_history(conn, target)
                compacted = target
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._w_compacted = compacted
        return compacted

    # ----------------------------------------------------------------- the committer (event loop)

    async def _commit_loop(self) -> None:
        while True:
            # A commit's outcome unknown: an empty group after a while re-reads the store.
            calls = await self._queue.next_group(_RECHECK_SECONDS if self._uncertain else None)
            if calls is None:
                return
            if not calls and not self._uncertain:
                continue
            assert self._writer is not None
            try:
                group = await self._writer.run(functools.partial(self._apply_group, calls))
            except Exception as error:  # a bug: fail the group rather than strand its writers
                log.exception("datastore %s: group commit crashed", self.path)
                group = _Group(calls)
                group.fail(f"internal error in group commit: {error!r}; the outcome is unknown", uncertain=True)
                # The writer thread is idle now, so its state may be set from here: what the loop has
                # is all that is known to be published; the next group re-reads the rest from the file.
                self._w_revision, self._w_suspect = self._arrived.revision, True
            self._arrive(group)

    def _arrive(self, group: _Group) -> None:
        """A group came back from the writer thread: count it, then publish it or hold it for a snapshot."""
        self._uncertain = group.uncertain
        size = sum(len(call.writes) for call in group.calls)
        if group.error is not None:
            log.error("datastore %s: a group of %d writes failed: %s", self.path, size, group.error)
            self.health.set(False)
        elif size:
            self.groups_committed += 1
            self.writes_committed += size
            self.health.set(True)
        units = [group]
        if group.recovered:
            # Revisions that landed although their commit reported failure go out as a batch of their own.
            units.insert(0, _Group([], changes=group.recovered, compacted=group.compacted))
        for unit in units:
            if self._holding or self._held:
                self._held.append(unit)  # keep order behind a snapshot in progress
            else:
                self._publish(unit)
        for unit in units:
            if unit.changes:
                self._arrived.advance(unit.changes[-1].revision)

    def _publish(self, group: _Group) -> None:
        if group.changes:
            self._feed.publish(group.changes)
        if group.error is None:
            self.oldest = max(self.oldest, group.compacted)
        for index, call in enumerate(group.calls):
            if group.error is not None:
                failure = DatastoreFull if group.full else DatastoreUnavailable
                message = f"the disk is full: {group.error}" if group.full else group.error
                call.settle([failure(f"datastore {self.path}: {message}")] * len(call.writes))
            else:
                call.settle(group.outcomes[index])

    # ----------------------------------------------------------------- the writer thread

    def _apply_group(self, calls: list[QueuedCall]) -> _Group:
        """Apply one group in one transaction. Runs on the writer thread."""
        conn = self._writer_conn()
        group = _Group(calls)
        if conn.in_transaction:  # left open by a crash in an earlier group: it was never committed
            conn.execute("ROLLBACK")
        if self._w_suspect:
            # The last commit failed in a way that may have landed: look before writing on top of it.
            try:
                stored = meta_value(conn, "revision")
            except sqlite3.Error as error:
                group.fail(f"the store cannot be read: {error}; nothing was written", uncertain=True)
                return group
            if stored > self._w_revision:
                group.recovered = read_history(conn, self._w_revision, stored)
                log.warning("datastore %s: revisions %d..%d landed after all", self.path, self._w_revision + 1, stored)
                self._w_revision = stored
            self._w_suspect = False
        group.revision, group.compacted = self._w_revision, self._w_compacted
        if not calls:
            return group
        start = revision = self._w_revision
        compacted = self._w_compacted
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            group.fail(f"cannot start a transaction: {error}; nothing was written", cause=error)
            return group
        try:
            group.outcomes, revision = apply_group(
                conn, [call.writes for call in calls], start, group.changes, self.path
            )
            if revision != start:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            if revision - compacted >= self.history_window + min(_COMPACT_SLACK, max(1, self.history_window // 10)):
                compacted = revision - self.history_window
                trim_history(conn, compacted)
        except Exception as error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            group.fail(f"the group's transaction failed: {error}; nothing was written", cause=error)
            return group
        try:
            conn.execute("COMMIT")  # and the fsync of the WAL
        except Exception as error:
            return self._after_failed_commit(conn, group, error, revision, compacted)
        self._w_revision, self._w_compacted = revision, compacted
        group.revision, group.compacted = revision, compacted
        return group

    def _after_failed_commit(
        self, conn: sqlite3.Connection, group: _Group, error: Exception, revision: int, compacted: int
    ) -> _Group:
        """COMMIT failed: find out from the file whether the group landed, and report accordingly."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        try:
            stored = meta_value(conn, "revision")
        except sqlite3.Error as reread:
            log.error("datastore %s: commit failed (%s) and the store cannot be read (%s)", self.path, error, reread)
            self._w_suspect = True
            group.fail(f"commit failed: {error}; the outcome is unknown", uncertain=True)
            return group
        if revision != self._w_revision and stored == revision:
            log.warning("datastore %s: COMMIT reported %s, but the group is stored; publishing it", self.path, error)
            self._w_revision, self._w_compacted = revision, compacted
            group.revision, group.compacted = revision, compacted
            return group
        if stored == self._w_revision:
            group.fail(f"commit failed: {error}; nothing was written", cause=error)
        else:
            self._w_suspect = True
            group.fail(
                f"commit failed: {error}; the store is at revision {stored}, the outcome is unknown", uncertain=True
            )
        return group
