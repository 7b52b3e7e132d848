"""The embedded datastore: SQLite in WAL mode, with group commit and a retained change history.

Threads and ordering:
- One writer connection, used only from one dedicated thread. Every `write()` call queues its
  writes and awaits a future; a committer task on the event loop drains the queue (whole calls,
  up to `max_group` writes) into ONE transaction, so one fsync covers the group, and while the
  writer thread fsyncs, the next group accumulates. Each write runs inside its own SAVEPOINT, so
  an unexpected error rolls back that write alone.
- Readers (`get`, `snapshot`, `changes_since`) use a second connection on a second thread, so
  they never wait behind a commit's fsync. WAL readers only see committed transactions, and
  with `synchronous=FULL` a commit becomes visible only after the WAL is fsynced.
- The committer publishes each committed group on the event loop thread: it bumps
  `current_revision`, calls the listeners, and only then resolves the writers' futures. So
  revisions reach listeners in commit order and a writer can read its own write from a cache
  fed by a listener.
- `snapshot()` holds publication back while it reads, then publishes exactly the groups its read
  saw before it returns, so `current_revision == snapshot.revision` at that moment.

The revision counter and the compacted revision live in the `meta` table, so deleting every
object or restarting never reuses a revision. The schema version is `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from epsync.store.base import (
    KIND_OF_VALUE,
    Change,
    ChangeListener,
    Committed,
    Conflict,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    Kind,
    Put,
    Record,
    RevisionCompacted,
    Snapshot,
    Write,
    WriteFailed,
    WriteResult,
    check_write,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Each entry upgrades the schema from version i to i + 1; `_migrate` runs the ones a file lacks.
_MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0)",
        """CREATE TABLE objects (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB NOT NULL,
            create_revision INTEGER NOT NULL,
            mod_revision INTEGER NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID""",
        # revision is the rowid: appends go to the end of the b-tree, compaction trims its start.
        """CREATE TABLE history (
            revision INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            previous BLOB,
            create_revision INTEGER NOT NULL
        )""",
    ),
]
assert len(_MIGRATIONS) == SCHEMA_VERSION

# Automatic compaction trims history once it is this many revisions past the window, so each
# pass deletes a bounded number of rows inside an ordinary group commit.
_COMPACT_SLACK = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CommitStats:
    """Group-commit counters for the operator status."""

    groups_committed: int
    writes_committed: int  # writes in committed groups, conflicts included
    revisions_committed: int  # writes that changed something
    last_group_size: int
    max_group_size: int
    avg_group_size: float
    commit_failures: int  # groups whose transaction failed as a whole
    queued_writes: int


@dataclass(slots=True)
class _Call:
    """One `write()` call waiting for its group."""

    writes: list[Write]
    future: asyncio.Future[list[WriteResult]]


@dataclass(slots=True)
class _Group:
    """What the writer thread did with one group, handed back to the event loop."""

    calls: list[_Call]
    outcomes: list[list[WriteResult | Exception]] = field(default_factory=list)  # per call, per write
    changes: list[Change] = field(default_factory=list)  # to publish, ascending
    recovered: list[Change] = field(default_factory=list)  # earlier revisions that landed despite a failed COMMIT
    error: str | None = None  # the whole group failed with this message
    uncertain: bool = False  # ... and it may have landed: check before the next group
    revision: int = 0  # the stored revision after the group
    compacted: int = 0

    def fail(self, error: str, *, uncertain: bool = False) -> None:
        self.error = error
        self.uncertain = uncertain
        self.outcomes = []
        self.changes = []


class _TransactionLost(Exception):
    """SQLite rolled the whole transaction back on an error (disk full, I/O error)."""


_Key = tuple[Kind, str]
# Keys per statement when reading a group's rows (SQLite allows 32,766 variables).
_KEYS_PER_READ = 500
_UPSERT = (
    "INSERT INTO objects (kind, key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
    "create_revision = excluded.create_revision, mod_revision = excluded.mod_revision"
)


def select_keys(count: int) -> str:
    """The rows of `count` keys of one kind. One kind and a plain IN list, because SQLite answers
    that from the primary key; a row-value `(kind, key) IN (VALUES ...)` scans the whole table."""
    placeholders = ", ".join(["?"] * count)
    return f"SELECT key, value, create_revision, mod_revision FROM objects WHERE kind = ? AND key IN ({placeholders})"


def _apply_batched(
    conn: sqlite3.Connection, calls: list[_Call], revision: int, changes: list[Change]
) -> tuple[list[list[WriteResult | Exception]], int]:
    """Apply a group's writes after `revision` in a handful of statements; returns (outcomes, revision).

    The rows of every key the group writes are read at once, each write is judged in order against
    the state the writes before it left, and then each key's final row and every history row are
    written with executemany. The writer thread thereby calls into SQLite a few times per group
    instead of five times per write: each call hands the GIL to the event loop and must win it back.
    """
    wanted = list({(write.kind, write.key) for call in calls for write in call.writes})
    current: dict[_Key, Record | None] = dict.fromkeys(wanted)
    by_kind: dict[Kind, list[str]] = {}
    for kind, name in wanted:
        by_kind.setdefault(kind, []).append(name)
    for kind, names in by_kind.items():
        for first in range(0, len(names), _KEYS_PER_READ):
            chunk = names[first : first + _KEYS_PER_READ]
            rows = conn.execute(select_keys(len(chunk)), [kind.value, *chunk])
            for name, value, create_revision, mod_revision in rows:
                current[(kind, name)] = Record(kind, name, value, create_revision, mod_revision)
    existed = {key for key, record in current.items() if record is not None}
    touched: set[_Key] = set()
    history: list[tuple[int, str, str, bytes | None, bytes | None, int]] = []
    outcomes: list[list[WriteResult | Exception]] = []
    for call in calls:
        results: list[WriteResult | Exception] = []
        for write in call.writes:
            key = (write.kind, write.key)
            now = current[key]
            expected = write.expected_mod_revision
            previous = None if now is None else now.value
            if isinstance(write, Put):
                if expected is not None and (0 if now is None else now.mod_revision) != expected:
                    results.append(Conflict(now))
                    continue
                revision += 1
                create_revision = revision if now is None else now.create_revision
                record = Record(write.kind, write.key, write.value, create_revision, revision)
                current[key] = record
                history.append((revision, write.kind.value, write.key, write.value, previous, create_revision))
                changes.append(Change(revision, write.kind, write.key, write.value, previous, create_revision))
                results.append(Committed(revision, record, now))
            else:
                if now is None or (expected is not None and now.mod_revision != expected):
                    results.append(Conflict(now))
                    continue
                revision += 1
                current[key] = None
                history.append((revision, write.kind.value, write.key, None, previous, now.create_revision))
                changes.append(Change(revision, write.kind, write.key, None, previous, now.create_revision))
                results.append(Committed(revision, None, now))
            touched.add(key)
        outcomes.append(results)
    final = [(key, current[key]) for key in touched]
    deletes = [(kind.value, name) for (kind, name), record in final if record is None and (kind, name) in existed]
    upserts = [(r.kind.value, r.key, r.value, r.create_revision, r.mod_revision) for _, r in final if r is not None]
    # Only the statements with rows: a group of one write costs as many calls as it did one by one.
    if deletes:
        conn.executemany("DELETE FROM objects WHERE kind = ? AND key = ?", deletes)
    if upserts:
        conn.executemany(_UPSERT, upserts)
    if history:
        conn.executemany(
            "INSERT INTO history (revision, kind, key, value, previous, create_revision) VALUES (?, ?, ?, ?, ?, ?)",
            history,
        )
    return outcomes, revision


class _Savepoint:
    """A savepoint: released on success; on failure rolled back alone and the error re-raised, or
    `_TransactionLost` if SQLite already rolled the whole transaction back. A class, not a
    generator-based context manager: it is entered once per write on the writer thread, which
    holds the GIL the event loop needs."""

    __slots__ = ("_conn", "_name")

    def __init__(self, conn: sqlite3.Connection, name: str = "write") -> None:
        self._conn = conn
        self._name = name

    def __enter__(self) -> None:
        self._conn.execute(f"SAVEPOINT {self._name}")

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: object) -> None:
        conn = self._conn
        if error is None:
            conn.execute(f"RELEASE {self._name}")
            return
        if not conn.in_transaction:
            raise _TransactionLost(str(error)) from error
        try:
            conn.execute(f"ROLLBACK TO {self._name}")
            conn.execute(f"RELEASE {self._name}")
        except sqlite3.Error as rollback_error:
            raise _TransactionLost(str(rollback_error)) from error


def _history(conn: sqlite3.Connection, after: int, upto: int, limit: int | None = None) -> list[Change]:
    """The retained changes after `after` up to `upto`, in revision order, at most `limit`."""
    rows = conn.execute(
        "SELECT revision, kind, key, value, previous, create_revision FROM history "
        "WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
        (after, upto, -1 if limit is None else limit),
    ).fetchall()
    return [Change(r, KIND_OF_VALUE[k], key, v, p, c) for r, k, key, v, p, c in rows]


def _record(kind: Kind, key: str, row: tuple[bytes, int, int]) -> Record:
    return Record(kind, key, row[0], row[1], row[2])


class SqliteDatastore(Datastore):
    """The embedded default datastore: one SQLite file (WAL, synchronous=FULL) plus a lock file beside it."""

    def __init__(self, path: Path, *, history_window: int = 100_000, max_group: int = 1000) -> None:
        if history_window < 1:
            raise ValueError("history_window must be at least 1")
        if max_group < 1:
            raise ValueError("max_group must be at least 1")
        self.path = Path(path)
        self.history_window = history_window
        self.max_group = max_group
        self._listeners: list[ChangeListener] = []
        self._open = False
        self._closing = False
        # Event-loop state.
        self._revision = 0  # last published revision
        self._oldest = 0  # oldest_revision as last published
        self._arrived = 0  # last revision the committer got back from the writer (published or held)
        self._queue: deque[_Call] = deque()
        self._queued_writes = 0
        self._wakeup = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._holding = False  # a snapshot is reading: committed groups wait in _held
        self._held: list[_Group] = []
        self._arrival_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._snapshot_lock = asyncio.Lock()
        self._uncertain = False
        # Counters.
        self._groups_committed = 0
        self._writes_committed = 0
        self._revisions_committed = 0
        self._last_group_size = 0
        self._max_group_size = 0
        self._commit_failures = 0
        # Writer-thread state: only touched on the writer thread once open.
        self._writer_executor: ThreadPoolExecutor | None = None
        self._reader_executor: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._w_revision = 0  # the revision the writer knows is stored and handed to the loop
        self._w_compacted = 0
        self._w_suspect = False  # a commit failed with an unknown outcome; re-read before the next group

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._open:
            raise DatastoreError(f"datastore {self.path} is already open")
        self._writer_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epsync-store-writer")
        self._reader_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="epsync-store-reader")
        try:
            revision, compacted = await self._on_writer(self._open_writer)
            await self._on_reader(self._open_reader)
        except BaseException:
            await self._release_resources()
            raise
        self._revision = self._arrived = revision
        self._oldest = compacted
        self._w_revision, self._w_compacted = revision, compacted
        self._open = True
        self._closing = False
        self._uncertain = False
        self._wakeup = asyncio.Event()
        self._snapshot_lock = asyncio.Lock()
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop(), name="epsync-store-committer")
        log.info("datastore %s open at revision %d (history from %d)", self.path, revision, compacted)

    async def close(self) -> None:
        if not self._open:
            return
        self._closing = True
        self._wakeup.set()
        if self._committer is not None:
            await self._committer  # drains every write accepted before close
            self._committer = None
        async with self._snapshot_lock:  # a snapshot in flight finishes (and publishes what it held)
            self._flush_held()
            self._open = False
            await self._release_resources()
        log.info("datastore %s closed at revision %d", self.path, self._revision)

    async def _release_resources(self) -> None:
        if self._reader_executor is not None:
            with contextlib.suppress(Exception):
                await self._on_reader(self._close_reader)
            self._reader_executor.shutdown(wait=True)
            self._reader_executor = None
        if self._writer_executor is not None:
            with contextlib.suppress(Exception):
                await self._on_writer(self._close_writer)
            self._writer_executor.shutdown(wait=True)
            self._writer_executor = None

    def _open_writer(self) -> tuple[int, int]:
        """On the writer thread: take the lock file, open or create the database, migrate it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatastoreError(
                f"cannot create data directory {self.path.parent}: {error.strerror or error}"
            ) from error
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            lock_file = open(lock_path, "ab")  # noqa: SIM115 - held open until close
        except OSError as error:
            raise DatastoreError(f"cannot open datastore lock file {lock_path}: {error.strerror or error}") from error
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            lock_file.close()
            raise DatastoreError(
                f"datastore {self.path} is in use by another epsync process (cannot lock {lock_path})"
            ) from error
        self._lock_file = lock_file
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            self._close_lock()
            raise DatastoreError(f"cannot open datastore {self.path}: {error}") from error
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DatastoreError(f"datastore {self.path}: cannot switch to WAL mode (journal_mode is {mode})")
            # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
            conn.execute("PRAGMA synchronous = FULL")
            # Writes look up random keys of a possibly large table: keep its pages in memory (64 MiB at most).
            conn.execute("PRAGMA cache_size = -65536")
            self._migrate(conn)
            rows = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.Error as error:
            conn.close()
            self._close_lock()
            raise DatastoreError(f"cannot open datastore {self.path}: {error}") from error
        except BaseException:
            conn.close()
            self._close_lock()
            raise
        self._writer = conn
        return int(rows["revision"]), int(rows["compacted"])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DatastoreError(
                f"datastore {self.path} has schema version {version}; this epsync understands up to {SCHEMA_VERSION}"
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise DatastoreError(f"{self.path} is an SQLite database, but not an epsync datastore")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("datastore %s migrated to schema version %d", self.path, target)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._close_lock()

    def _close_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def _open_reader(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as error:
            raise DatastoreError(f"cannot open datastore {self.path} for reading: {error}") from error
        self._reader = conn

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        assert self._writer_executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._writer_executor, fn)

    async def _on_reader(self, fn: Callable[[], T]) -> T:
        assert self._reader_executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._reader_executor, fn)

    def _check_open(self) -> None:
        if not self._open or self._closing:
            raise DatastoreUnavailable(f"datastore {self.path} is {'closing' if self._open else 'not open'}")

    # ----------------------------------------------------------------- properties

    @property
    def current_revision(self) -> int:
        return self._revision

    @property
    def oldest_revision(self) -> int:
        return self._oldest

    @property
    def groups_committed(self) -> int:
        return self._groups_committed

    @property
    def writes_committed(self) -> int:
        return self._writes_committed

    @property
    def last_group_size(self) -> int:
        return self._last_group_size

    @property
    def avg_group_size(self) -> float:
        return self._writes_committed / self._groups_committed if self._groups_committed else 0.0

    def commit_stats(self) -> CommitStats:
        return CommitStats(
            groups_committed=self._groups_committed,
            writes_committed=self._writes_committed,
            revisions_committed=self._revisions_committed,
            last_group_size=self._last_group_size,
            max_group_size=self._max_group_size,
            avg_group_size=self.avg_group_size,
            commit_failures=self._commit_failures,
            queued_writes=self._queued_writes,
        )

    # ----------------------------------------------------------------- reads

    async def get(self, kind: Kind, key: str) -> Record | None:
        self._check_open()

        def read() -> Record | None:
            assert self._reader is not None
            row = self._reader.execute(
                "SELECT value, create_revision, mod_revision FROM objects WHERE kind = ? AND key = ?", (kind.value, key)
            ).fetchone()
            return None if row is None else _record(kind, key, row)

        return await self._on_reader(read)

    async def snapshot(self) -> Snapshot:
        self._check_open()
        async with self._snapshot_lock:
            self._holding = True
            snapshot: Snapshot | None = None
            try:
                snapshot = await self._on_reader(self._read_snapshot)
                # Every group up to the snapshot's revision is committed; wait until the committer has it.
                await self._wait_arrived(snapshot.revision)
            finally:
                self._holding = False
                # Publish, synchronously, exactly the groups the snapshot covers; the rest go out after
                # the caller (resumed synchronously by our return) has applied the snapshot.
                self._flush_held(up_to=None if snapshot is None else snapshot.revision)
                if self._held:
                    asyncio.get_running_loop().call_soon(self._flush_held)
            assert self._revision == snapshot.revision, (self._revision, snapshot.revision)
            return snapshot

    def _read_snapshot(self) -> Snapshot:
        conn = self._reader
        assert conn is not None
        conn.execute("BEGIN")
        try:
            revision = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
            rows = conn.execute(
                "SELECT kind, key, value, create_revision, mod_revision FROM objects ORDER BY kind, key"
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return Snapshot(int(revision), [Record(KIND_OF_VALUE[k], key, v, c, m) for k, key, v, c, m in rows])

    async def _wait_arrived(self, revision: int) -> None:
        if self._arrived >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrival_waiters.append((revision, waiter))
        await waiter

    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        self._check_open()
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        # Only what listeners have seen: history and the live feed never disagree.
        upto = self._revision

        def read() -> list[Change]:
            conn = self._reader
            assert conn is not None
            conn.execute("BEGIN")
            try:
                compacted = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()[0]
                if revision < compacted:
                    raise RevisionCompacted(int(compacted), revision)
                return _history(conn, revision, upto, limit)
            finally:
                conn.execute("COMMIT")

        return await self._on_reader(read)

    # ----------------------------------------------------------------- writes

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        batch = list(writes)
        for item in batch:
            check_write(item)
        self._check_open()
        if not batch:
            return []
        future: asyncio.Future[list[WriteResult]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(batch, future))
        self._queued_writes += len(batch)
        self._wakeup.set()
        return await future

    async def compact(self, keep: int) -> int:
        self._check_open()
        if keep < 0:
            raise ValueError("keep must not be negative")
        target = max(0, self._revision - keep)
        compacted = await self._on_writer(lambda: self._compact_now(target))
        self._oldest = max(self._oldest, compacted)
        return self._oldest

    def _compact_now(self, target: int) -> int:
        """On the writer thread, between groups: trim history up to `target` in its own transaction."""
        conn = self._writer
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            compacted = conn.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()[0]
            if target > compacted:
                self._trim_history(conn, target)
                compacted = target
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._w_compacted = compacted
        return int(compacted)

    @staticmethod
    def _trim_history(conn: sqlite3.Connection, upto: int) -> None:
        conn.execute("DELETE FROM history WHERE revision <= ?", (upto,))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (upto,))

    # ----------------------------------------------------------------- the committer (event loop side)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                if self._uncertain:
                    # A commit's outcome is unknown: an empty group re-reads the store and publishes
                    # whatever did land, so listeners never miss a durable change.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), 0.5)
                else:
                    await self._wakeup.wait()
                if not self._queue and not self._uncertain:
                    continue
            calls = self._take_group()
            assert self._writer_executor is not None
            try:
                group = await loop.run_in_executor(self._writer_executor, self._apply_group, calls)
            except Exception as error:  # a bug: fail the group rather than strand its writers
                log.exception("datastore %s: group commit crashed", self.path)
                group = _Group(calls)
                group.fail(f"internal error in group commit: {error!r}; the outcome is unknown", uncertain=True)
                # The writer thread is idle now, so its state may be set from here: what the loop has
                # is all that is known to be published; the next group re-reads the rest from the file.
                self._w_revision, self._w_suspect = self._arrived, True
            self._arrive(group)

    def _take_group(self) -> list[_Call]:
        calls: list[_Call] = []
        size = 0
        while self._queue:
            n = len(self._queue[0].writes)
            if calls and size + n > self.max_group:
                break  # a call is never split; one larger than max_group forms its own group
            calls.append(self._queue.popleft())
            size += n
        self._queued_writes -= size
        return calls

    def _arrive(self, group: _Group) -> None:
        """A group came back from the writer thread: count it, then publish it or hold it for a snapshot."""
        self._uncertain = group.uncertain
        size = sum(len(call.writes) for call in group.calls)
        if group.error is not None:
            self._commit_failures += 1
            log.error("datastore %s: a group of %d writes failed: %s", self.path, size, group.error)
        elif size:
            self._groups_committed += 1
            self._writes_committed += size
            self._revisions_committed += sum(isinstance(o, Committed) for call in group.outcomes for o in call)
            self._last_group_size = size
            self._max_group_size = max(self._max_group_size, size)
        units = [group]
        if group.recovered:
            # Revisions that landed although their commit reported failure go out as a batch of their own.
            units.insert(0, _Group([], changes=group.recovered, compacted=group.compacted))
        for unit in units:
            if unit.changes:
                self._arrived = unit.changes[-1].revision
            if self._holding or self._held:
                self._held.append(unit)  # keep order behind a snapshot in progress
            else:
                self._publish(unit)
        waiting = []
        for revision, waiter in self._arrival_waiters:
            if revision > self._arrived:
                waiting.append((revision, waiter))
            elif not waiter.done():
                waiter.set_result(None)
        self._arrival_waiters = waiting

    def _flush_held(self, up_to: int | None = None) -> None:
        """Publish held groups in order: those at or below `up_to` if given, else all (unless a snapshot holds)."""
        while self._held:
            group = self._held[0]
            if up_to is None and self._holding:
                break
            if up_to is not None and group.changes and group.changes[-1].revision > up_to:
                break
            self._held.pop(0)
            self._publish(group)

    def _publish(self, group: _Group) -> None:
        if group.changes:
            self._revision = group.changes[-1].revision
            for listener in list(self._listeners):
                try:
                    listener(group.changes)
                except Exception:
                    log.exception("datastore listener %r failed at revision %d", listener, self._revision)
        if group.error is None:
            self._oldest = max(self._oldest, group.compacted)
        for index, call in enumerate(group.calls):
            if call.future.done():  # the caller gave up waiting; the write stands regardless
                continue
            if group.error is not None:
                call.future.set_exception(DatastoreUnavailable(f"datastore {self.path}: {group.error}"))
                continue
            outcomes = group.outcomes[index]
            results = [o for o in outcomes if not isinstance(o, Exception)]
            if len(results) == len(outcomes):
                call.future.set_result(results)
            else:
                call.future.set_exception(WriteFailed(outcomes))

    # ----------------------------------------------------------------- the writer thread

    def _apply_group(self, calls: list[_Call]) -> _Group:
        """Apply one group in one transaction. Runs on the writer thread."""
        conn = self._writer
        assert conn is not None
        group = _Group(calls)
        if conn.in_transaction:  # left open by a crash in an earlier group: it was never committed
            conn.execute("ROLLBACK")
        if self._w_suspect:
            # The last commit failed in a way that may have landed: look before writing on top of it.
            try:
                stored = int(conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])
            except sqlite3.Error as error:
                group.fail(f"the store cannot be read: {error}; nothing was written", uncertain=True)
                return group
            if stored > self._w_revision:
                group.recovered = _history(conn, self._w_revision, stored)
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
            group.fail(f"cannot start a transaction: {error}; nothing was written")
            return group
        try:
            revision = self._apply_calls(conn, calls, group, start)
            if revision != start:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            if revision - compacted >= self.history_window + min(_COMPACT_SLACK, max(1, self.history_window // 10)):
                compacted = revision - self.history_window
                self._trim_history(conn, compacted)
        except Exception as error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            group.fail(f"the group's transaction failed: {error}; nothing was written")
            return group
        try:
            self._commit(conn)
        except Exception as error:
            return self._after_failed_commit(conn, group, error, revision, compacted)
        self._w_revision, self._w_compacted = revision, compacted
        group.revision, group.compacted = revision, compacted
        return group

    def _apply_calls(self, conn: sqlite3.Connection, calls: list[_Call], group: _Group, start: int) -> int:
        """Apply every write of the group after revision `start`; returns the new revision.

        All at once first (`_apply_batched`); if SQLite fails that (a trigger, a full disk), nobody can
        tell which write it was, so the batch is rolled back and the writes are applied one by one,
        each in its own savepoint, and only the failing one fails."""
        try:
            with _Savepoint(conn, "batch"):
                outcomes, revision = _apply_batched(conn, calls, start, group.changes)
        except sqlite3.Error as error:
            group.changes.clear()
            log.info("datastore %s: a group failed as a batch (%s); applying it one write at a time", self.path, error)
        else:
            group.outcomes.extend(outcomes)
            return revision
        revision = start
        for call in calls:
            one_by_one: list[WriteResult | Exception] = []
            for write in call.writes:
                try:
                    result = self._apply_one(conn, write, revision + 1, group.changes)
                except _TransactionLost:
                    raise
                except Exception as error:
                    if not conn.in_transaction:
                        raise _TransactionLost(str(error)) from error
                    log.warning("datastore %s: %r failed and was rolled back alone: %r", self.path, write, error)
                    one_by_one.append(error)
                    continue
                if isinstance(result, Committed):
                    revision += 1
                one_by_one.append(result)
            group.outcomes.append(one_by_one)
        return revision

    def _commit(self, conn: sqlite3.Connection) -> None:
        """The group's COMMIT and its fsync (a seam for tests that make it fail)."""
        conn.execute("COMMIT")

    def _after_failed_commit(
        self, conn: sqlite3.Connection, group: _Group, error: Exception, revision: int, compacted: int
    ) -> _Group:
        """COMMIT failed: find out from the file whether the group landed, and report accordingly."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        try:
            stored = int(conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0])
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
            group.fail(f"commit failed: {error}; nothing was written")
        else:
            self._w_suspect = True
            group.fail(
                f"commit failed: {error}; the store is at revision {stored}, the outcome is unknown", uncertain=True
            )
        return group

    def _apply_one(self, conn: sqlite3.Connection, write: Write, revision: int, changes: list[Change]) -> WriteResult:
        """Judge and apply one write at `revision`; the modification runs inside its own savepoint."""
        kind, key = write.kind.value, write.key
        row = conn.execute(
            "SELECT value, create_revision, mod_revision FROM objects WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        current = None if row is None else _record(write.kind, key, row)
        expected = write.expected_mod_revision
        if isinstance(write, Put):
            if expected is not None and (current.mod_revision if current is not None else 0) != expected:
                return Conflict(current)
            create_revision = current.create_revision if current is not None else revision
            with _Savepoint(conn):
                if current is None:
                    conn.execute(
                        "INSERT INTO objects (kind, key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?, ?)",
                        (kind, key, write.value, revision, revision),
                    )
                else:
                    conn.execute(
                        "UPDATE objects SET value = ?, mod_revision = ? WHERE kind = ? AND key = ?",
                        (write.value, revision, kind, key),
                    )
                conn.execute(
                    "INSERT INTO history (revision, kind, key, value, previous, create_revision) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (revision, kind, key, write.value, None if current is None else current.value, create_revision),
                )
            changes.append(
                Change(
                    revision, write.kind, key, write.value, None if current is None else current.value, create_revision
                )
            )
            return Committed(revision, Record(write.kind, key, write.value, create_revision, revision), current)
        if current is None or (expected is not None and current.mod_revision != expected):
            return Conflict(current)
        with _Savepoint(conn):
            conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, key))
            conn.execute(
                "INSERT INTO history (revision, kind, key, value, previous, create_revision) "
                "VALUES (?, ?, ?, NULL, ?, ?)",
                (revision, kind, key, current.value, current.create_revision),
            )
        changes.append(Change(revision, write.kind, key, None, current.value, current.create_revision))
        return Committed(revision, None, current)


__all__ = ["SCHEMA_VERSION", "CommitStats", "SqliteDatastore"]
