"""Fixtures for the datastore tests: a real SQLite store in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from epsync.store.base import Change, Committed, Kind, Put, WriteResult
from epsync.store.sqlite import SqliteDatastore

EP = Kind.WORKLOAD_ENDPOINT
PR = Kind.PROFILE


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "epsync.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteDatastore]:
    instance = SqliteDatastore(db_path)
    await instance.open()
    yield instance
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


async def put(store: SqliteDatastore, key: str, value: bytes = b"v", kind: Kind = EP) -> Committed:
    (result,) = await store.write([Put(kind, key, value)])
    return committed(result)
