"""Applying one group of writes inside the writer's open transaction, each write judged alone.

`apply_group` first applies the whole group in a handful of statements (`apply_batched`): the rows
of every key the group writes are read at once, each write is judged in order against the state
the writes before it left, and then each key's final row and every history row are written with
executemany. The writer thread thereby calls into SQLite a few times per group instead of five
times per write: each call hands the GIL to the event loop and must win it back.

If SQLite fails that batch (a trigger, a full disk), nobody can tell which write it was, so the
batch is rolled back to its savepoint and the writes are applied one by one (`apply_one`), each in
its own savepoint, and only the failing one fails. When SQLite has rolled back the whole
transaction instead (it does on some I/O errors), `TransactionLost` says so and the group fails.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from epsync.store.base import Change, Committed, Kind, Put, Record, Write, WriteResult, conflict_of
from epsync.store.feed import Outcomes
from epsync.store.sqlite.schema import read_record

log = logging.getLogger(__name__)

_Key = tuple[Kind, str]
# Keys per statement when reading a group's rows (SQLite allows 32,766 variables).
_KEYS_PER_READ = 500
_UPSERT = (
    "INSERT INTO objects (kind, key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
    "create_revision = excluded.create_revision, mod_revision = excluded.mod_revision"
)
_INSERT_HISTORY = (
    "INSERT INTO history (revision, kind, key, value, previous, create_revision, previous_revision) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class TransactionLost(Exception):
    """SQLite rolled the whole transaction back on an error (disk full, I/O error)."""


class Savepoint:
    """A savepoint: released on success; on failure rolled back alone and the error re-raised, or
    `TransactionLost` if SQLite already rolled the whole transaction back. A class, not a
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
            raise TransactionLost(str(error)) from error
        try:
            conn.execute(f"ROLLBACK TO {self._name}")
            conn.execute(f"RELEASE {self._name}")
        except sqlite3.Error as rollback_error:
            raise TransactionLost(str(rollback_error)) from error


def select_keys(count: int) -> str:
    """The rows of `count` keys of one kind. One kind and a plain IN list, because SQLite answers
    that from the primary key; a row-value `(kind, key) IN (VALUES ...)` scans the whole table."""
    placeholders = ", ".join(["?"] * count)
    return f"SELECT key, value, create_revision, mod_revision FROM objects WHERE kind = ? AND key IN ({placeholders})"


def apply_group(
    conn: sqlite3.Connection, calls: Sequence[Sequence[Write]], start: int, changes: list[Change], path: Path
) -> tuple[list[Outcomes], int]:
    """Apply every write of the group's calls after revision `start`; returns (outcomes per call, new revision).

    Appends the committed changes to `changes`. Raises TransactionLost if the transaction is gone."""
    try:
        with Savepoint(conn, "batch"):
            return apply_batched(conn, calls, start, changes)
    except sqlite3.Error as error:
        changes.clear()
        log.info("datastore %s: a group failed as a batch (%s); applying it one write at a time", path, error)
    revision = start
    outcomes: list[Outcomes] = []
    for writes in calls:
        one_by_one: Outcomes = []
        for write in writes:
            try:
                result = apply_one(conn, write, revision + 1, changes)
            except TransactionLost:
                raise
            except Exception as error:
                if not conn.in_transaction:
                    raise TransactionLost(str(error)) from error
                log.warning("datastore %s: %r failed and was rolled back alone: %r", path, write, error)
                one_by_one.append(error)
                continue
            if isinstance(result, Committed):
                revision += 1
            one_by_one.append(result)
        outcomes.append(one_by_one)
    return outcomes, revision


def apply_batched(
    conn: sqlite3.Connection, calls: Sequence[Sequence[Write]], revision: int, changes: list[Change]
) -> tuple[list[Outcomes], int]:
    """Apply a group's writes after `revision` in a handful of statements; returns (outcomes, revision)."""
    wanted = list({(write.kind, write.key) for writes in calls for write in writes})
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
    history: list[tuple[int, str, str, bytes | None, bytes | None, int, int | None]] = []
    outcomes: list[Outcomes] = []
    for writes in calls:
        results: Outcomes = []
        for write in writes:
            kind, name = write.kind, write.key
            key = (kind, name)
            now = current[key]
            conflict = conflict_of(write, now)
            if conflict is not None:
                results.append(conflict)
                continue
            revision += 1
            change = _change(write, now, revision)
            if isinstance(write, Put):
                record = Record(write.kind, write.key, write.value, change.create_revision, revision)
                current[key] = record
                results.append(Committed(revision, record, now))
            else:
                current[key] = None
                results.append(Committed(revision, None, now))
            history.append(
                (
                    revision,
                    write.kind.value,
                    write.key,
                    change.value,
                    change.previous,
                    change.create_revision,
                    change.previous_revision,
                )
            )
            changes.append(change)
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
        conn.executemany(_INSERT_HISTORY, history)
    return outcomes, revision


def apply_one(conn: sqlite3.Connection, write: Write, revision: int, changes: list[Change]) -> WriteResult:
    """Judge and apply one write at `revision`; the modification runs inside its own savepoint."""
    kind, key = write.kind.value, write.key
    current = read_record(conn, write.kind, key)
    conflict = conflict_of(write, current)
    if conflict is not None:
        return conflict
    change = _change(write, current, revision)
    with Savepoint(conn):
        if not isinstance(write, Put):
            conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, key))
        elif current is None:
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
            _INSERT_HISTORY,
            (revision, kind, key, change.value, change.previous, change.create_revision, change.previous_revision),
        )
    changes.append(change)
    if isinstance(write, Put):
        return Committed(revision, Record(write.kind, key, write.value, change.create_revision, revision), current)
    return Committed(revision, None, current)


def _change(write: Write, current: Record | None, revision: int) -> Change:
    """The change a write that passed its precondition makes at `revision` (a Delete's `current` exists)."""
    previous = None if current is None else current.value
    previous_revision = 0 if current is None else current.mod_revision
    if isinstance(write, Put):
        create_revision = revision if current is None else current.create_revision
        return Change(revision, write.kind, write.key, write.value, previous, create_revision, previous_revision)
    assert current is not None
    return Change(revision, write.kind, write.key, None, previous, current.create_revision, previous_revision)
