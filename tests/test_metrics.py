"""The operator's view (`--metrics-listen`): Prometheus metrics that say what the server holds and did,
/livez and /readyz, and a Grafana dashboard that asks only for metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from epsync.client import Client
from epsync.errors import NotFound
from epsync.server.app import EpsyncServer
from tests.conftest import REPO, server_config
from tests.factories import endpoint

pytestmark = pytest.mark.timeout(60)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def _held_watch(client: Client) -> AsyncGenerator[Any, None]:
    """A watch of node1, read until it is in sync and left open; close it with `aclose`."""
    events = cast(AsyncGenerator[Any, None], aiter(client.watch(node="node1")))
    while not (await anext(events)).initial_events_end:
        pass
    return events


async def _scrape(server: EpsyncServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert server.metrics is not None
    status, text = await asyncio.to_thread(_get, f"http://127.0.0.1:{server.metrics.port}/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    # A counter with no sample yet (nothing refused so far) is still served: its name, as a query names it.
    for family in families:
        name = f"{family.name}_total" if family.type == "counter" else family.name
        samples.setdefault((name, ()), 0.0)
    return samples


async def test_metrics_say_what_the_server_holds_and_did(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", metrics_listen="127.0.0.1:0"))
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
            await client.create_endpoint(endpoint("web", node="node1"))
            with pytest.raises(NotFound):
                await client.get_endpoint("missing")
            held = await _held_watch(client)
            metrics = await _scrape(server)
            await held.aclose()
        assert metrics[("epsync_watchers", (("filter", "node"), ("kind", "endpoints")))] == 1
        assert metrics[("epsync_watchers", (("filter", "selector"), ("kind", "endpoints")))] == 0
        assert metrics[("epsync_watchers", (("filter", "all"), ("kind", "profiles")))] == 0
        assert metrics[("epsync_connections", ())] == 1  # the client's one connection
        assert metrics[("epsync_plan_seconds_count", ())] >= 1
        assert metrics[("epsync_revision", ())] == server.cache.revision
        assert metrics[("epsync_cached_objects", (("kind", "endpoints"),))] == 1
        assert metrics[("epsync_watch_responses_total", (("kind", "endpoints"),))] >= 1
        assert metrics[("epsync_watch_bytes_total", (("kind", "endpoints"),))] > 0
        assert metrics[("epsync_rejected_requests_total", (("code", "NOT_FOUND"), ("reason", "")))] >= 1
        assert metrics[("epsync_datastore_up", ())] == 1
        assert metrics[("epsync_ready", ())] == 1
        assert metrics[("epsync_undecodable_values_skipped", ())] == 0
        assert metrics[("epsync_write_seconds_count", (("kind", "endpoints"),))] == 1  # the one create
        assert metrics[("epsync_commit_group_size_count", (("kind", "endpoints"),))] == 1
        assert metrics[("epsync_commit_group_size_bucket", (("kind", "endpoints"), ("le", "1")))] == 1
    finally:
        await server.stop(grace=0.1)


async def test_livez_and_readyz(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", metrics_listen="127.0.0.1:0"))
    await server.start()
    assert server.metrics is not None
    base = f"http://127.0.0.1:{server.metrics.port}"
    assert await asyncio.to_thread(_get, f"{base}/livez") == (200, "ok\n")
    assert (await asyncio.to_thread(_get, f"{base}/readyz"))[0] == 200
    async with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
        # Ten watches held open: the drain ends them over most of its grace period, serving meanwhile.
        held = [await _held_watch(client) for _ in range(10)]
        stopping = asyncio.create_task(server.stop(grace=2.0))
        await asyncio.sleep(0.1)
        status, text = await asyncio.to_thread(_get, f"{base}/readyz")
        assert status == 503, text
        assert (await asyncio.to_thread(_get, f"{base}/livez"))[0] == 200
        for watch in held:
            await watch.aclose()
        await stopping
    assert server.metrics is None


async def test_the_dashboard_asks_only_for_metrics_that_exist(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", metrics_listen="127.0.0.1:0"))
    await server.start()
    try:
        served = {name for name, _ in await _scrape(server)}
    finally:
        await server.stop(grace=0.1)
    dashboard = json.loads((REPO / "deploy" / "grafana" / "epsync.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bepsync_[a-z_]+", target["expr"])
    }
    assert asked, "the dashboard has no epsync queries"
    assert asked <= served, f"the dashboard asks for metrics the server does not serve: {sorted(asked - served)}"
