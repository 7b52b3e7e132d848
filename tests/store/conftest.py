"""Fixtures for the datastore tests: every backend behind one parametrised `store` fixture.

`store` is an open datastore on each backend in turn: SQLite in a temporary directory, and etcd on
the session's one real etcd under a fresh key prefix (ids `[sqlite]` and `[etcd]`). `backend` makes
more stores at the same or new locations (restarts, a second replica). Tests about the embedded
store's own nature (files, locks, schema, group-commit internals) use `sqlite_store` or `db_path`;
`faulty_store` is one whose writer connection lets a test stand in for SQLite (`WriterFaults`).

The third backend, `[worker]`, is what a worker process of `epsync serve --workers N` opens: a
RemoteDatastore on the Unix socket of an owner that serves a real SQLite store (here in the same
process and event loop, over a real socket). It holds the SQLite store's revisions and history.

Revisions differ between backends (etcd counts every key and gives one transaction's writes one
revision), so the shared tests take revisions from results, never literals.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from epsync.store.base import Change, Committed, Datastore, Kind, Put, WriteResult
from epsync.store.etcd import EtcdDatastore
from epsync.store.remote import RemoteDatastore, serve_store
from epsync.store.sqlite import SqliteDatastore
from tests.etcd_fixture import EtcdServer, unique_prefix

EP = Kind.WORKLOAD_ENDPOINT
PR = Kind.PROFILE
BACKENDS = ("sqlite", "etcd", "worker")


class WorkerStore(RemoteDatastore):
    """A worker's datastore with its owner beside it: SQLite at `path`, served on a socket in `socket_dir`."""

    def __init__(self, path: Path, socket_dir: Path, **options: Any) -> None:
        super().__init__(socket_dir / "owner.sock", request_timeout=5.0, open_seconds=10.0)
        self.owner = SqliteDatastore(path, **options)
        self._service: grpc.aio.Server | None = None

    async def open(self) -> None:
        await self.owner.open()
        self._service, _ = await serve_store(self.owner, self.socket_path)
        await super().open()

    async def close(self) -> None:
        await super().close()
        if self._service is not None:
            await self._service.stop(0)
            self._service = None
        await self.owner.close()


@dataclass
class Backend:
    """Makes stores of one backend: `location()` is a new, empty place; `make(location)` a store on it."""

    name: str
    directory: Path
    etcd: EtcdServer | None = None

    def __post_init__(self) -> None:
        self._counter = itertools.count()

    @property
    def embedded(self) -> bool:
        """Whether the stores are SQLite's, directly or through an owner (revisions 1, 2, 3, ...)."""
        return self.name != "etcd"

    def location(self) -> str:
        if self.embedded:
            return str(self.directory / f"store-{next(self._counter)}" / "epsync.db")
        return unique_prefix()

    def make(self, location: str, **options: Any) -> Datastore:
        if self.name == "sqlite":
            return SqliteDatastore(Path(location), **options)
        if self.name == "worker":
            # Unix socket paths are short (108 bytes): not under pytest's long temporary paths.
            return WorkerStore(Path(location), Path(tempfile.mkdtemp(prefix="epsync-owner-")), **options)
        assert self.etcd is not None
        settings: dict[str, Any] = {"catch_up_seconds": 5.0, "reconnect_max_seconds": 0.5} | options
        return EtcdDatastore([self.etcd.endpoint], prefix=location, **settings)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "etcd":
        return Backend("etcd", tmp_path, request.getfixturevalue("session_etcd"))
    return Backend("sqlite", tmp_path)


@pytest.fixture
def location(backend: Backend) -> str:
    return backend.location()


@pytest.fixture
async def store(backend: Backend, location: str) -> AsyncIterator[Datastore]:
    instance = backend.make(location)
    await instance.open()
    yield instance
    await instance.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "epsync.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteDatastore]:
    instance = SqliteDatastore(db_path)
    await instance.open()
    yield instance
    await instance.close()


Statement = Callable[[str, Callable[[], sqlite3.Cursor]], sqlite3.Cursor]


class WriterFaults:
    """Faults in the embedded store's writer, injected through the connection class it connects with.

    While `on_statement` is set, it runs in place of each statement the writer executes, given the
    SQL and a function that runs it for real: it may run it, fail instead, or run it and then fail
    (a COMMIT that landed but reported an error).
    """

    def __init__(self) -> None:
        self.on_statement: Statement | None = None

    def connection_class(self) -> type[sqlite3.Connection]:
        faults = self

        class FaultyConnection(sqlite3.Connection):
            def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
                def run() -> sqlite3.Cursor:
                    return super(FaultyConnection, self).execute(sql, parameters)

                return run() if faults.on_statement is None else faults.on_statement(sql, run)

        return FaultyConnection


@pytest.fixture
def writer_faults() -> WriterFaults:
    return WriterFaults()


@pytest.fixture
async def faulty_store(db_path: Path, writer_faults: WriterFaults) -> AsyncIterator[SqliteDatastore]:
    instance = SqliteDatastore(db_path, connection_class=writer_faults.connection_class())
    await instance.open()
    yield instance
    writer_faults.on_statement = None
    await instance.close()


class Recorder:
    """A listener that keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []

    def __call__(self, changes: Sequence[Change]) -> None:
        self.batches.append(list(changes))

    @property
    def changes(self) -> list[Change]:
        return [change for batch in self.batches for change in batch]


def committed(result: WriteResult) -> Committed:
    assert isinstance(result, Committed), result
    return result


async def put(store: Datastore, key: str, value: bytes = b"v", kind: Kind = EP) -> Committed:
    (result,) = await store.write([Put(kind, key, value)])
    return committed(result)


def assert_revision_order(changes: Sequence[Change]) -> None:
    """SPEC 6.1: revisions never decrease, and no (object, revision) pair repeats."""
    revisions = [c.revision for c in changes]
    assert revisions == sorted(revisions), revisions
    pairs = [(c.kind, c.key, c.revision) for c in changes]
    assert len(pairs) == len(set(pairs)), "an object changed twice in one revision"
