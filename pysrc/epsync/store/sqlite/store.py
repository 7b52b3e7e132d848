"""The embedded datastore: SQLite in WAL mode, with group commit and a retained change history.

The store answers reads and takes writes; the file's layout is schema.py's, applying a group of
writes is apply.py's, and committing groups and publishing them is committer.py's.

- Writes go to the GroupCommitter, which commits them in groups on one writer thread and publishes
  each committed group to the listeners before the writers' calls return.
- Readers (`get`, `snapshot`, `changes_since`) use a second connection on a second thread, so they
  never wait behind a commit's fsync; they only ever see committed, fsynced transactions.
- `snapshot()` holds publication back while it reads, then publishes exactly the groups its read
  saw before it returns, so `current_revision == snapshot.revision` at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from epsync.store.base import (
    KIND_OF_VALUE,
    Change,
    ChangeListener,
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
from epsync.store.feed import ChangeFeed, results_of
from epsync.store.sqlite.committer import GroupCommitter
from epsync.store.sqlite.schema import ConnectionThread, meta_value, open_reader, read_history, read_record

log = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteDatastore(Datastore):
    """The embedded default datastore: one SQLite file (WAL, synchronous=FULL) plus a lock file beside it.

    `history_window`: revisions of history kept for `changes_since`. `max_group`: the most writes
    one group commit takes (a larger call goes alone). `connection_class`: the sqlite3.Connection
    (sub)class the writer connects with.
    """

    def __init__(
        self,
        path: Path,
        *,
        history_window: int = 100_000,
        max_group: int = 1000,
        connection_class: type[sqlite3.Connection] = sqlite3.Connection,
        expect_existing: bool = False,
    ) -> None:
        if history_window < 1:
            raise ValueError("history_window must be at least 1")
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.path = Path(path)
        self.history_window = history_window
        self.max_group = max_group
        self._feed = ChangeFeed()
        self._committer = GroupCommitter(
            self.path,
            self._feed,
            history_window=history_window,
            max_group=max_group,
            connection_class=connection_class,
            expect_existing=expect_existing,
        )
        self._open = False
        self._closing = False
        self._snapshot_lock = asyncio.Lock()
        self._reader: ConnectionThread[sqlite3.Connection] | None = None

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._open:
            raise DatastoreError(f"datastore {self.path} is already open")
        self._reader = ConnectionThread("epsync-reader")
        try:
            revision = await self._committer.open()
            await self._reader.open(lambda: open_reader(self.path))
        except BaseException:
            await self._release_resources()
            raise
        self._feed.reset(revision)
        self._open = True
        self._closing = False
        self._snapshot_lock = asyncio.Lock()
        self._committer.start()
        log.info("datastore %s open at revision %d (history from %d)", self.path, revision, self.oldest_revision)

    async def close(self) -> None:
        if not self._open:
            return
        self._closing = True
        await self._committer.drain()  # commits every write accepted before close
        async with self._snapshot_lock:  # a snapshot in flight finishes (and publishes what it held)
            self._committer.publish_held()
            self._open = False
            await self._release_resources()
        log.info("datastore %s closed at revision %d", self.path, self.current_revision)

    async def _release_resources(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self._committer.close()

    async def _on_reader(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read(connection)` on the reader's thread."""
        reader = self._reader
        assert reader is not None
        return await reader.run(lambda: read(reader.connection))

    def _check_open(self) -> None:
        if not self._open or self._closing:
            raise DatastoreUnavailable(f"datastore {self.path} is {'closing' if self._open else 'not open'}")

    # ----------------------------------------------------------------- properties

    @property
    def current_revision(self) -> int:
        return self._feed.revision

    @property
    def oldest_revision(self) -> int:
        return self._committer.oldest

    @property
    def groups_committed(self) -> int:
        """Group commits that went through (one transaction, one fsync each)."""
        return self._committer.groups_committed

    @property
    def writes_committed(self) -> int:
        """Writes in those groups, conflicts included."""
        return self._committer.writes_committed

    # ----------------------------------------------------------------- reads

    async def get(self, kind: Kind, key: str) -> Record | None:
        self._check_open()

        return await self._on_reader(lambda conn: read_record(conn, kind, key))

    async def snapshot(self) -> Snapshot:
        self._check_open()
        async with self._snapshot_lock:
            self._committer.hold()
            snapshot: Snapshot | None = None
            try:
                snapshot = await self._on_reader(self._read_snapshot)
                # Every group up to the snapshot's revision is committed; wait until the committer has it.
                await self._committer.wait_arrived(snapshot.revision)
            finally:
                self._committer.release(None if snapshot is None else snapshot.revision)
            assert self.current_revision == snapshot.revision, (self.current_revision, snapshot.revision)
            return snapshot

    @staticmethod
    def _read_snapshot(conn: sqlite3.Connection) -> Snapshot:
        conn.execute("BEGIN")
        try:
            revision = meta_value(conn, "revision")
            rows = conn.execute(
                "SELECT kind, key, value, create_revision, mod_revision FROM objects ORDER BY kind, key"
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return Snapshot(revision, [Record(KIND_OF_VALUE[k], key, v, c, m) for k, key, v, c, m in rows])

    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        self._check_open()
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        # Only what listeners have seen: history and the live feed never disagree.
        upto = self.current_revision

        def read(conn: sqlite3.Connection) -> list[Change]:
            conn.execute("BEGIN")
            try:
                compacted = meta_value(conn, "compacted")
                if revision < compacted:
                    raise RevisionCompacted(compacted, revision)
                return read_history(conn, revision, upto, limit)
            finally:
                conn.execute("COMMIT")

        return await self._on_reader(read)

    # ----------------------------------------------------------------- writes

    @property
    def identity(self) -> StoreIdentity:
        if self._committer.identity is None:
            raise DatastoreUnavailable(f"datastore {self.path} is not open")
        return self._committer.identity

    @property
    def healthy(self) -> bool:
        """False while commits fail (a full disk, a failing device), true again after one succeeds."""
        return self._committer.health.healthy

    def add_health_listener(self, listener: HealthListener) -> None:
        self._committer.health.add_listener(listener)

    def add_listener(self, listener: ChangeListener) -> None:
        self._feed.add_listener(listener)

    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        batch = list(writes)
        for item in batch:
            check_write(item)
        self._check_open()
        if not batch:
            return []
        return results_of(await self._committer.submit(batch))

    async def compact(self, keep: int) -> int:
        self._check_open()
        if keep < 0:
            raise ValueError("keep must not be negative")
        return await self._committer.compact(max(0, self.current_revision - keep))


__all__ = ["SqliteDatastore"]
