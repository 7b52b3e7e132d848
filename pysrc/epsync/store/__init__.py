"""Datastores: the interface (`base`) and the embedded SQLite backend (`sqlite`)."""

from epsync.store.base import (
    Change,
    ChangeListener,
    Committed,
    Conflict,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    Delete,
    Kind,
    Put,
    Record,
    RevisionCompacted,
    Snapshot,
    Write,
    WriteFailed,
    WriteResult,
)
from epsync.store.sqlite import CommitStats, SqliteDatastore

__all__ = [
    "Change",
    "ChangeListener",
    "CommitStats",
    "Committed",
    "Conflict",
    "Datastore",
    "DatastoreError",
    "DatastoreUnavailable",
    "Delete",
    "Kind",
    "Put",
    "Record",
    "RevisionCompacted",
    "Snapshot",
    "SqliteDatastore",
    "Write",
    "WriteFailed",
    "WriteResult",
]
