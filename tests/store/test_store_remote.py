"""What only a worker's store does: follow an owner that can go away, and be cut off when it lags.

The shared datastore tests run on the `[worker]` backend too (conftest.py); these are the failure
paths of the feed between the owner process and a worker.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from epsync.store.base import Change, DatastoreUnavailable, Put
from epsync.store.remote import RemoteDatastore, serve_store
from epsync.store.sqlite import SqliteDatastore
from tests.store.conftest import EP, Recorder, put


@pytest.fixture
def socket_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="epsync-owner-")) / "owner.sock"


async def test_a_worker_whose_owner_goes_away_turns_unavailable_for_good(db_path: Path, socket_path: Path) -> None:
    owner = SqliteDatastore(db_path)
    await owner.open()
    server, service = await serve_store(owner, socket_path)
    worker = RemoteDatastore(socket_path, request_timeout=2.0)
    await worker.open()
    health: list[bool] = []
    worker.add_health_listener(health.append)
    recorder = Recorder()
    worker.add_listener(recorder)
    assert (await worker.snapshot()).records == []
    written = await put(worker, "ns/a")
    assert worker.current_revision == written.revision  # read-your-writes: the feed brought it first
    assert [c.key for c in recorder.changes] == ["ns/a"]
    assert service.followers == 1

    await server.stop(0)
    async with asyncio.timeout(5):
        await worker.lost.wait()
    assert not worker.healthy
    assert health[-1] is False
    with pytest.raises(DatastoreUnavailable, match="lost its feed"):
        await worker.write([Put(EP, "ns/b", b"v")])
    await worker.close()
    await owner.close()


async def test_a_follower_that_falls_behind_is_cut_off(db_path: Path, socket_path: Path) -> None:
    owner = SqliteDatastore(db_path)
    await owner.open()
    server, service = await serve_store(owner, socket_path)
    service.max_pending = 3
    worker = RemoteDatastore(socket_path, request_timeout=2.0)
    await worker.open()
    await worker.snapshot()
    # A burst of commits handed to the service's listener faster than the stream sends them.
    for revision in range(1, 6):
        service.publish_changes([Change(revision, EP, f"ns/{revision}", b"v", None, revision)])
    async with asyncio.timeout(5):
        await worker.lost.wait()
    assert worker.current_revision < 5
    assert service.followers == 0
    await worker.close()
    await server.stop(0)
    await owner.close()
