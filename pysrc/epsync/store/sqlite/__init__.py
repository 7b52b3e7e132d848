"""The embedded datastore: SQLite in WAL mode, with group commit and a retained change history."""

from epsync.store.sqlite.store import SCHEMA_VERSION, SqliteDatastore

__all__ = ["SCHEMA_VERSION", "SqliteDatastore"]
