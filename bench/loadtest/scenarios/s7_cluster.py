"""Scenario 7, epsync as a cluster: scenario 1's sweep on `--replicas` epsync processes in front of one etcd.

Each replica runs `serve --datastore etcd`; the watchers and the writer's streams are spread over
the replicas, and the server figures are the replicas' and etcd's together, set beside scenario 1's
on the embedded store. The check compares every view, whichever replica it came from, with one
replica's store once the writes have ended.
"""

from __future__ import annotations

from bench.loadtest.context import Context, System
from bench.loadtest.scenarios.s1_churn import sweep


async def run(ctx: Context, system: System) -> None:
    ctx.progress.done(f"scenario 7: steady churn on {system.name} (node and selector watchers)")
    await sweep(ctx, "scenario7", system, ctx.settings.rates)
    await ctx.checked("scenario7", system)
