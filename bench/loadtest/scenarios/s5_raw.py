"""Scenario 5, the raw gRPC ceiling: the same watchers fed pre-encoded events by a bare grpc.aio server.

The raw server (`bench.loadtest.rawserver`) serves the method epsync serves and does the least a
fan-out server can, so the agents connect to it unchanged and what it delivers bounds what any
Python server on grpc.aio delivers on this machine. It generates its own writes; the sweep runs
through `--raw-rates` until the first rate it does not hold.
"""

from __future__ import annotations

from bench.loadtest.context import Context, System
from bench.loadtest.scenarios.s1_churn import sweep


async def run(ctx: Context, system: System) -> None:
    await sweep(ctx, "scenario5", system, ctx.settings.raw_rates, until_saturated=True)
    await ctx.checked("scenario5", system)
