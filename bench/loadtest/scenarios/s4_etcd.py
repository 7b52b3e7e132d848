"""Scenario 4, epsync and etcd side by side: scenarios 1 and 2 on etcd, and epsync again in etcd's shape.

etcd gets the same payloads, the same writer rates and the same node agents, each watching its
node's key prefix (and re-listing after a reconnect, since etcd has no known-versions resume);
selector watchers have no etcd equivalent, so epsync is swept again with its node watchers only.
The summary's ratios (`bench.loadtest.results.comparisons`) set each figure of one against the other.
"""

from __future__ import annotations

from bench.loadtest.context import Context, System
from bench.loadtest.scenarios import s2_storms
from bench.loadtest.scenarios.s1_churn import sweep


async def on_epsync(ctx: Context, system: System) -> None:
    """The sweep on epsync with the selector watchers dropped for it, then reconnected."""
    # Like for like with etcd: node watchers only (the selector watchers have no etcd equivalent).
    selector_ids = [spec["id"] for spec in ctx.specs if "selector" in spec]
    await system.fleet.drop(selector_ids)
    ctx.progress.done("scenario 4: epsync with the node watchers only, as etcd runs")
    await sweep(ctx, "scenario4", system, ctx.settings.rates)
    await ctx.checked("scenario4", system, ctx.node_specs)
    await system.fleet.reconnect(fresh=False, within=ctx.settings.sync_timeout, ids=selector_ids)


async def on_etcd(ctx: Context, system: System) -> None:
    """The sweep on etcd, then its reconnect storms (scenario 2's rows, under the system "etcd")."""
    ctx.progress.done("scenario 4: steady churn on etcd (node watchers)")
    await sweep(ctx, "scenario4", system, ctx.settings.rates)
    await ctx.checked("scenario4", system)
    await s2_storms.run(ctx, system)
