"""A stored value that does not decode (written by hand, or damaged) is left out, named in the log,
and never stops the server: at start-up (SQLite) or while it runs (etcd, a value put by etcdctl)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from epsync.client import Client
from epsync.client.view import Backoff
from epsync.errors import FailedPrecondition, NotFound
from epsync.model.kinds import Kind
from epsync.server.app import EpsyncServer
from epsync.store.etcd import EtcdDatastore
from epsync.store.etcd.client import EtcdClient
from tests.conftest import server_config
from tests.etcd_fixture import EtcdServer, unique_prefix
from tests.factories import endpoint, profile

GARBAGE = b"\x0a\x64"  # "field 1, 100 bytes follow", and none do


async def test_a_row_that_does_not_decode_is_left_out_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = server_config(tmp_path / "data")
    first = EpsyncServer(config)
    await first.start()
    async with Client(f"127.0.0.1:{first.port}") as client:
        kept = await client.create_endpoint(endpoint("kept"))
        await client.create_endpoint(endpoint("damaged"))
    await first.stop(0)
    with sqlite3.connect(tmp_path / "data" / "epsync.db") as db:
        db.execute("UPDATE objects SET value = ? WHERE key = 'default/damaged'", (GARBAGE,))

    caplog.set_level(logging.ERROR)
    second = EpsyncServer(config)
    await second.start()
    try:
        async with Client(f"127.0.0.1:{second.port}") as client:
            assert await client.get_endpoint("kept") == kept
            with pytest.raises(NotFound):
                await client.get_endpoint("damaged")
            assert [e.metadata.name async for e in client.list_endpoints()] == ["kept"]
            with pytest.raises(FailedPrecondition, match="does not decode"):  # nothing to judge a write against
                await client.update_endpoint(endpoint("damaged"), allow_missing=True)
            with pytest.raises(NotFound):
                await client.delete_endpoint("damaged")
        assert "default/damaged" in caplog.text
        assert "does not decode" in caplog.text
        assert second.cache.undecodable == {"workloadendpoints/default/damaged": 2}
        async with Client(f"127.0.0.1:{second.port}") as client:  # named in the status (and counted in a metric)
            status = await client.get_status()
        assert dict(status.undecodable) == {
            "workloadendpoints/default/damaged": "does not decode (stored at revision 2)"
        }
    finally:
        await second.stop(0)


async def test_a_value_put_by_hand_while_serving_is_a_deletion_to_watchers(
    session_etcd: EtcdServer, tmp_path: Path
) -> None:
    prefix = unique_prefix()
    config = server_config(
        tmp_path / "data", datastore="etcd", etcd_endpoints=(session_etcd.endpoint,), etcd_prefix=prefix
    )
    server = EpsyncServer(config)
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}") as client, EtcdClient(session_etcd.endpoint) as etcd:
            await client.create_endpoint(endpoint("kept"))
            await client.create_endpoint(endpoint("damaged"))
            view = client.watch(backoff=Backoff(initial=0.02, maximum=0.1))
            watching = asyncio.create_task(_run(view))
            async with asyncio.timeout(10):
                while set(view.objects) != {"default/kept", "default/damaged"}:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert isinstance(server.store, EtcdDatastore)
            await etcd.put(server.store.keyspace.key(Kind.WORKLOAD_ENDPOINT, "default/damaged"), GARBAGE)
            async with asyncio.timeout(10):
                while set(view.objects) != {"default/kept"}:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert "workloadendpoints/default/damaged" in server.cache.undecodable
            await client.create_endpoint(endpoint("after"))  # the server goes on
            async with asyncio.timeout(10):
                while set(view.objects) != {"default/kept", "default/after"}:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            assert "workloadendpoints/default/damaged" in server.cache.undecodable  # still stored
            # Removed by hand (etcdctl del): no longer named, though nothing else in its batch was undecodable.
            await etcd.delete_range(server.store.keyspace.key(Kind.WORKLOAD_ENDPOINT, "default/damaged"))
            async with asyncio.timeout(10):
                while server.cache.undecodable:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            watching.cancel()
    finally:
        await server.stop(0)


async def _run(view: object) -> None:
    async for _ in view:  # type: ignore[attr-defined]
        pass


async def test_a_profile_is_checked_as_a_profile(tmp_path: Path) -> None:
    """Each kind's values decode as its own message: a profile label key of more than 127 bytes makes a map entry
    whose length is not UTF-8, which an endpoint's string field at that number would refuse."""
    long_key = f"{'a' * 60}.{'b' * 60}.com/name"
    server = EpsyncServer(server_config(tmp_path / "data"))
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}") as client:
            created = await client.create_profile(profile("long-key", {long_key: "v"}))
            assert await client.get_profile("long-key") == created
        assert server.cache.undecodable == {}
    finally:
        await server.stop(0)
