"""The owner's datastore, for the other processes of one server (`epsync serve --workers N`).

One process, the owner, opens the real datastore (SQLite or etcd) and serves it on a Unix socket
(`service`); every other worker process opens a `RemoteDatastore` on that socket (`store`), which
is a Datastore like any other: a snapshot and the owner's change feed after it, reads, and writes
that the owner commits. `codec` turns the store's values into the internal protocol's messages
(proto/epsync/internal/v1) and back.
"""

from epsync.store.remote.service import StoreService, serve_store
from epsync.store.remote.store import RemoteDatastore

__all__ = ["RemoteDatastore", "StoreService", "serve_store"]
