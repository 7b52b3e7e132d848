"""Scenario 2, reconnect storms: every node watcher drops and reconnects at once, three ways.

(a) with its state (the last revision and the versions it holds) and nothing changed meanwhile;
(b) with its state, after `--storm-change-fraction` of the endpoints changed while it was away;
(c) without state, so the server sends everything again. Per storm: the time until all are in
sync again, the spread of each watcher's own time, the bytes received, and the server's CPU (in all
and per reconnect) and peak RSS. Scenario 4 runs the same storms against etcd, whose node agents re-list.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence

from bench.loadtest import procstat
from bench.loadtest.context import Context, System

CURVE_POINTS = 500


async def run(ctx: Context, system: System) -> None:
    s = ctx.settings
    fleet, writer, server, sampler = system.fleet, system.writer, system.server, system.sampler
    assert writer is not None, "a storm writes between the drop and the reconnect"
    assert server is not None, "a storm counts the server process's CPU"
    ids = [spec["id"] for spec in ctx.node_specs]
    changes = max(1, round(s.storm_change_fraction * s.shape.endpoints))
    ctx.progress.done(f"scenario 2: reconnect storms on {system.name} ({len(ids):,} node watchers)")
    for storm, fresh, change in (("a", False, 0), ("b", False, changes), ("c", True, 0)):
        await fleet.drop(ids)
        if change:
            await writer.call("burst", count=change, within=300)
        await asyncio.sleep(0.5)
        before_cpu = procstat.tree_cpu_seconds(server.pid)
        before_agents = fleet.cpu_seconds()
        started = time.time()
        label = f"[scenario2] {system.name} storm ({storm})"
        async with ctx.progress.ticking(label, 0, lambda: ""):
            reply = await fleet.reconnect(fresh=fresh, within=s.sync_timeout, ids=ids)
        ended = time.time()
        server_cpu = procstat.tree_cpu_seconds(server.pid) - before_cpu
        agents_cpu = fleet.cpu_seconds() - before_agents
        times = sorted(v[0] for v in reply["sync"].values())
        received = sum(v[1] for v in reply["sync"].values())
        row = {
            "system": system.name,
            "storm": storm,
            "description": {
                "a": "known versions, nothing changed",
                "b": f"known versions, {changes:,} endpoints ({s.storm_change_fraction:.0%}) changed",
                "c": "no state: full initial events",
            }[storm],
            "watchers": len(ids),
            "all_in_sync_s": ended - started,
            "p50_sync_s": quantile(times, 0.5),
            "p99_sync_s": quantile(times, 0.99),
            "bytes_received": received,
            "server_cpu_s": server_cpu,  # every process of the server (its workers too)
            "server_cpu_ms_per_reconnect": server_cpu / len(ids) * 1000,
            # The watchers' side of the same reconnects (new connections, calls, reading): on a machine
            # the agents share with the server, a storm takes at least its CPU over the cores.
            "agents_cpu_s": agents_cpu,
            "agents_cpu_ms_per_reconnect": agents_cpu / len(ids) * 1000,
            "server_peak_rss_mb": sampler.window(started - 0.5, ended + 0.5)["peak_rss_mb"],
        }
        ctx.out.add("scenario2", row)
        # At most CURVE_POINTS points a storm (10,000 watchers would make a 6 MB file), the last always kept.
        step = max(1, len(times) // CURVE_POINTS)
        curve = [
            {"seconds": t, "in_sync": (i + 1) / len(times), "storm": f"{system.name} ({storm})"}
            for i, t in enumerate(times)
            if i % step == step - 1 or i == len(times) - 1
        ]
        ctx.out.add_series(
            "scenario2", "completion", [{"seconds": 0.0, "in_sync": 0.0, "storm": f"{system.name} ({storm})"}, *curve]
        )
        ctx.progress.done(
            f"  {system.name} storm ({storm}): all {len(ids):,} in sync in {row['all_in_sync_s']:.2f} s "
            f"(p50 {row['p50_sync_s']:.2f} s), {received:,} bytes received, server "
            f"{row['server_cpu_s']:.1f} CPU s ({row['server_cpu_ms_per_reconnect']:.2f} ms a reconnect), agents "
            f"{agents_cpu:.1f} CPU s ({row['agents_cpu_ms_per_reconnect']:.2f} ms a reconnect), peak RSS "
            f"{row['server_peak_rss_mb']:,.0f} MiB"
        )
    await ctx.checked("scenario2", system)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest rank of sorted `values` (0 when empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
