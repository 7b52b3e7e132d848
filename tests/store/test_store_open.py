"""Opening the SQLite datastore: directories, clear errors, exclusivity, file format."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from epsync.store.base import Datastore, DatastoreError, Kind, Put
from epsync.store.sqlite import SCHEMA_VERSION, SqliteDatastore
from tests.store.conftest import put


async def test_missing_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "epsync.db"
    store = SqliteDatastore(path)
    await store.open()
    try:
        await put(store, "ns/a")
    finally:
        await store.close()
    assert path.is_file()


async def test_a_data_dir_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    store = SqliteDatastore(blocker / "data" / "epsync.db")
    with pytest.raises(DatastoreError, match=r"cannot create data directory .*not-a-dir/data"):
        await store.open()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "epsync.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DatastoreError, match=r"cannot open datastore .*epsync\.db: file is not a database"):
        await SqliteDatastore(path).open()


async def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE something (x)")
    conn.close()
    with pytest.raises(DatastoreError, match="not an epsync datastore"):
        await SqliteDatastore(path).open()


async def test_a_store_from_a_newer_schema_is_refused(db_path: Path) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    await store.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DatastoreError, match="schema version"):
        await SqliteDatastore(db_path).open()


async def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(db_path: Path) -> None:
    first = SqliteDatastore(db_path)
    await first.open()
    try:
        with pytest.raises(DatastoreError, match="in use by another epsync process"):
            await SqliteDatastore(db_path).open()
    finally:
        await first.close()
    second = SqliteDatastore(db_path)
    await second.open()
    await second.close()


async def test_the_file_is_in_wal_mode_with_the_schema_version_recorded(db_path: Path) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    try:
        await put(store, "ns/a")
        with sqlite3.connect(db_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"meta", "objects", "history"} <= tables
            assert dict(conn.execute("SELECT name, value FROM meta")) == {"revision": 1, "compacted": 0}
        conn.close()
    finally:
        await store.close()


async def test_a_schema_2_file_is_migrated_and_its_older_history_rows_have_no_previous_revision(
    db_path: Path,
) -> None:
    store = SqliteDatastore(db_path)
    await store.open()
    await store.write([Put(Kind.PROFILE, "p", b"one"), Put(Kind.PROFILE, "p", b"two")])
    await store.close()
    with sqlite3.connect(db_path) as conn:  # as schema 2 left it: no previous_revision column
        conn.execute("ALTER TABLE history DROP COLUMN previous_revision")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = SqliteDatastore(db_path)
    await store.open()
    try:
        await store.write([Put(Kind.PROFILE, "p", b"three")])
        history = await store.changes_since(0)
        assert [(c.value, c.previous_revision) for c in history] == [(b"one", None), (b"two", None), (b"three", 2)]
    finally:
        await store.close()


async def test_opening_twice_is_an_error(store: Datastore) -> None:
    with pytest.raises(DatastoreError, match="already open"):
        await store.open()


def test_bad_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="history_window"):
        SqliteDatastore(tmp_path / "x.db", history_window=0)
    with pytest.raises(ValueError, match="max_group"):
        SqliteDatastore(tmp_path / "x.db", max_group=0)


async def test_the_store_threads_carry_their_names_in_the_kernel(db_path: Path) -> None:
    """The writer's and the reader's threads are named where /proc, top -H and perf read names, so the
    server's CPU can be told apart by thread (the load test's per-thread figures rely on it)."""
    store = SqliteDatastore(db_path)
    await store.open()
    try:
        await put(store, "ns/a")
        assert await store.get(Kind.WORKLOAD_ENDPOINT, "ns/a") is not None
        names = _thread_names()
    finally:
        await store.close()
    assert {"epsync-writer", "epsync-reader"} <= names


def _thread_names() -> set[str]:
    return {(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}
