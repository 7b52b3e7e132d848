"""The embedded store's file: its tables and their migrations, opening it, the thread each
connection to it lives on, and the statements its reader and its writer share.

Four tables: `objects` (every stored record), `history` (one row per revision, with the value it
replaced and that value's revision, trimmed from the start by compaction),
`meta` and `identity` (the store's id and secret, made once). The revision
counter and the compacted revision live in `meta`, so deleting every object or restarting never
reuses a revision. The schema version is `PRAGMA user_version`; `_MIGRATIONS` takes a file from
any older version to `SCHEMA_VERSION`.

A lock file beside the database keeps a second epsync process off it. The writer's connection runs
with `journal_mode=WAL` and `synchronous=FULL`: WAL readers only see committed transactions, and a
commit becomes visible only after the WAL is fsynced. Each connection has a thread of its own
(`ConnectionThread`): a slow call (the writer's fsync) blocks that thread, never the event loop
nor the other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, Protocol, TypeVar

from epsync.store.base import KIND_OF_VALUE, Change, DatastoreError, Kind, Record, StoreIdentity

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3

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
    # 2: the store's identity (store/base.py StoreIdentity), made once, when the file is initialised
    # or first opened by a version that knows it. SQLite's randomblob draws from the OS's randomness.
    (
        "CREATE TABLE identity (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        "INSERT INTO identity (name, value) VALUES ('store_id', lower(hex(randomblob(16)))), "
        "('secret', randomblob(32))",
    ),
    # 3: each history row's previous mod_revision, so that the state before the oldest retained change
    # can be rebuilt at start and watches resume across a restart. Rows written before have NULL.
    ("ALTER TABLE history ADD COLUMN previous_revision INTEGER",),
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


@dataclass(slots=True)
class OpenedWriter:
    """The writer's connection, the lock file held while it is open, and the stored revisions."""

    conn: sqlite3.Connection
    lock_file: IO[bytes]
    revision: int
    compacted: int
    identity: StoreIdentity

    def close(self) -> None:
        self.conn.close()
        self.lock_file.close()  # releases the flock


def open_writer(
    path: Path, connection_class: type[sqlite3.Connection] = sqlite3.Connection, expect_existing: bool = False
) -> OpenedWriter:
    """Take the lock file, open or create the database (only open it, with `expect_existing`), migrate it, and
    check that its revision counter is not behind what it stores; DatastoreError says why it cannot."""
    if expect_existing and not path.exists():
        raise DatastoreError(
            f"datastore {path} does not exist, and it is expected to (--expect-existing-store): is the data "
            "directory the right one, or was it wiped? Start without the flag to make a new, empty store"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatastoreError(f"cannot create data directory {path.parent}: {error.strerror or error}") from error
    lock_path = path.with_name(path.name + ".lock")
    try:
        lock_file = open(lock_path, "ab")  # noqa: SIM115 - held open until close
    except OSError as error:
        raise DatastoreError(f"cannot open datastore lock file {lock_path}: {error.strerror or error}") from error
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        lock_file.close()
        raise DatastoreError(
            f"datastore {path} is in use by another epsync process (cannot lock {lock_path})"
        ) from error
    try:
        conn = sqlite3.connect(path, isolation_level=None, factory=connection_class)
    except sqlite3.Error as error:
        lock_file.close()
        raise DatastoreError(f"cannot open datastore {path}: {error}") from error
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise DatastoreError(f"datastore {path}: cannot switch to WAL mode (journal_mode is {mode})")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss.
        conn.execute("PRAGMA synchronous = FULL")
        # Writes look up random keys of a possibly large table: keep its pages in memory (64 MiB at most).
        conn.execute("PRAGMA cache_size = -65536")
        _migrate(conn, path)
        rows = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        named = dict(conn.execute("SELECT name, value FROM identity").fetchall())
        _check_counter(conn, path, int(rows["revision"]))
        identity = StoreIdentity(str(named["store_id"]), bytes(named["secret"]))
    except sqlite3.Error as error:
        conn.close()
        lock_file.close()
        raise DatastoreError(f"cannot open datastore {path}: {error}") from error
    except BaseException:
        conn.close()
        lock_file.close()
        raise
    return OpenedWriter(conn, lock_file, int(rows["revision"]), int(rows["compacted"]), identity)


def _check_counter(conn: sqlite3.Connection, path: Path, revision: int) -> None:
    """The revision counter must be at least every revision the file holds: behind them, the next writes
    would reuse revisions that clients already hold (and fail on the history's unique revisions)."""
    stored = conn.execute(
        "SELECT max(coalesce((SELECT max(mod_revision) FROM objects), 0), "
        "coalesce((SELECT max(revision) FROM history), 0))"
    ).fetchone()[0]
    if stored > revision:
        raise DatastoreError(
            f"datastore {path}: its revision counter ({revision}) is behind the revisions it stores (up to {stored}): "
            "the file was edited or restored in part; restore it whole from a backup"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise DatastoreError(
            f"datastore {path} has schema version {version}; this epsync understands up to {SCHEMA_VERSION}"
        )
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise DatastoreError(f"{path} is an SQLite database, but not an epsync datastore")
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
        log.info("datastore %s migrated to schema version %d", path, target)


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to an open store (the writer has created and migrated it)."""
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = 1")
    except sqlite3.Error as error:
        raise DatastoreError(f"cannot open datastore {path} for reading: {error}") from error
    return conn


class _Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)
T = TypeVar("T")


class ConnectionThread(Generic[C]):
    """One thread, and the one connection that is used only from it (`connection`, on that thread).

    A call goes to the thread on a queue and its result comes back to the caller's event loop in one
    `call_soon_threadsafe`: the writer makes one such round trip per group commit, and an executor's
    (a concurrent future chained to an asyncio one, and its bookkeeping) cost several times more."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_ThreadCall | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._connection: C | None = None

    async def open(self, connect: Callable[[], C]) -> C:
        """Make the connection on the thread."""
        self._connection = await self.run(connect)
        return self._connection

    @property
    def connection(self) -> C:
        assert self._connection is not None
        return self._connection

    async def run(self, fn: Callable[[], T]) -> T:
        """Call `fn` on the thread, after whatever it is doing now. It runs even if the caller stops waiting."""
        if self._thread is None:
            # Started on first use, like an executor's; daemon, so a store that was never closed (a crash
            # on the way out) cannot keep the process alive. Every orderly exit closes it.
            self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((fn, future, loop))
        return await future

    async def close(self) -> None:
        """Close the connection (if it was made) on the thread, then stop the thread."""
        if self._thread is None:
            return
        with contextlib.suppress(Exception):
            await self.run(self._close_connection)
        self._calls.put(None)
        self._thread.join()  # at once: its last call has run
        self._thread = None

    def _close_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _serve(self) -> None:
        _name_native_thread(self._name)
        while (call := self._calls.get()) is not None:
            fn, future, loop = call
            settle: Callable[[asyncio.Future[Any], Any], None]
            try:
                settle, outcome = _succeed, fn()
            except BaseException as error:  # handed to the caller, whatever it is
                settle, outcome = _fail, error
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody is waiting
                loop.call_soon_threadsafe(settle, future, outcome)


def _name_native_thread(name: str) -> None:
    """Give the calling thread `name` (at most 15 bytes) in the kernel too, where CPython leaves the process's
    name: per-thread CPU in /proc, `top -H`, perf and py-spy then tell the store's threads from the event
    loop's (the load test reports the server's CPU by thread). Linux only; elsewhere nothing changes."""
    with contextlib.suppress(OSError), open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
        comm.write(name[:15])


# A call for a ConnectionThread: the function, the caller's future and the caller's loop.
_ThreadCall = tuple[Callable[[], object], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


# On the caller's loop: its call's result or exception, unless it stopped waiting.
def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: Any) -> None:
    if not future.done():
        future.set_exception(error)


# --- statements the reader and the writer share ---------------------------------------------------


def meta_value(conn: sqlite3.Connection, name: str) -> int:
    """A counter of the `meta` table: 'revision' (the last one given out) or 'compacted'."""
    return int(conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


def read_record(conn: sqlite3.Connection, kind: Kind, key: str) -> Record | None:
    row = conn.execute(
        "SELECT value, create_revision, mod_revision FROM objects WHERE kind = ? AND key = ?", (kind.value, key)
    ).fetchone()
    return None if row is None else Record(kind, key, row[0], row[1], row[2])


def read_history(conn: sqlite3.Connection, after: int, upto: int, limit: int | None = None) -> list[Change]:
    """The retained changes after `after` up to `upto`, in revision order, at most `limit`."""
    rows = conn.execute(
        "SELECT revision, kind, key, value, previous, create_revision, previous_revision FROM history "
        "WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
        (after, upto, -1 if limit is None else limit),
    ).fetchall()
    return [Change(r, KIND_OF_VALUE[k], key, v, p, c, pr) for r, k, key, v, p, c, pr in rows]


def trim_history(conn: sqlite3.Connection, upto: int) -> None:
    """Drop the history up to `upto` and record it as compacted (inside the caller's transaction)."""
    conn.execute("DELETE FROM history WHERE revision <= ?", (upto,))
    conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (upto,))
