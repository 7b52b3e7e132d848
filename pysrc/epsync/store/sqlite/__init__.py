"""The embedded datastore: SQLite in WAL mode, with group commit and a retained change history.

`store` is the Datastore; `schema` the file (tables, migrations, opening it); `apply` applies one
group of writes in a transaction; `committer` is the writer thread and the group commit.
"""

from epsync.store.sqlite.schema import SCHEMA_VERSION
from epsync.store.sqlite.store import SqliteDatastore

__all__ = ["SCHEMA_VERSION", "SqliteDatastore"]
