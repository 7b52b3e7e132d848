"""`StatusService.GetStatus` and `epsync status`: what one server process holds, as an operator asks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest

from epsync.client import Client
from epsync.server.app import EpsyncServer
from tests.conftest import epsync_command, run_command, serve_process, server_config
from tests.factories import endpoint

pytestmark = pytest.mark.timeout(60)


async def _held(client: Client, node: str = "") -> AsyncGenerator[Any, None]:
    events = cast(AsyncGenerator[Any, None], aiter(client.watch(node=node)))
    while not (await anext(events)).initial_events_end:
        pass
    return events


async def test_get_status_reports_the_process(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", max_watchers=123))
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
            await client.create_endpoint(endpoint("web", node="node1"))
            held = [await _held(client, node="node1"), await _held(client, node="node1"), await _held(client)]
            status = await client.get_status(top_groups=1)
            for watch in held:
                await watch.aclose()
    finally:
        await server.stop(grace=0.1)
    assert status.datastore_healthy
    assert not status.shutting_down
    assert status.store_id == server.store.identity.store_id
    assert status.revision == server.cache.revision
    assert (status.endpoints, status.profiles, status.watchers) == (1, 0, 3)
    assert [(g.kind, g.filter, g.watchers) for g in status.top_groups] == [
        ("endpoints", "every namespace, node=node1", 2)
    ]
    assert status.limits["max-watchers"] == "123"
    assert status.limits["mode"] == "etcdv3"
    assert status.mean_commit_group_size["endpoints"] == 1.0  # one create, one commit
    assert not status.undecodable


async def test_epsync_status_prints_it(tmp_path: Path) -> None:
    async with serve_process("--workers", "1", "--data-dir", str(tmp_path / "data")) as served:
        target = f"127.0.0.1:{served.port}"
        status, out, err = await run_command(*epsync_command("status", "--server", target))
        assert status == 0, err
        assert "datastore:   healthy" in out
        assert "watchers:    0" in out
        assert "max-watchers 50000" in out
        status, out, err = await run_command(*epsync_command("status", "--server", target, "-o", "json"))
        assert status == 0, err
        assert json.loads(out)["datastoreHealthy"] is True


async def test_json_logs_are_one_object_a_line_naming_the_process(tmp_path: Path) -> None:
    async with serve_process("--workers", "2", "--log-format", "json", "--data-dir", str(tmp_path / "data")) as served:
        for _ in range(100):  # the worker logs once it serves too
            if any('"worker-1"' in line for line in served.log):
                break
            await asyncio.sleep(0.1)
    entries = [json.loads(line) for line in served.log if line.strip()]
    assert {entry["process"] for entry in entries} >= {"owner", "worker-1"}
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert any(entry["message"].startswith("epsync serving on") for entry in entries)
