"""Scenario 1, steady churn: the write-rate sweep, with every node and selector watcher reading.

The writer offers each rate of `--rates` in turn for `--warmup-seconds` + `--step-seconds`; the
agents' latency over the measured seconds, the events delivered, the server's CPU and peak RSS,
the writer's and the agents' CPU make one row per rate. A rate is held when p99 stays under
`--p99-budget-ms` and the writer achieved 95% of it; the highest rate held is the scenario's
figure. Scenarios 4, 5 and 7 measure with the same sweep on other systems.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench.loadtest.context import Context, System
from bench.loadtest.histogram import Histogram


async def run(ctx: Context, system: System) -> None:
    ctx.progress.done("scenario 1: steady churn on epsync (node and selector watchers)")
    await sweep(ctx, "scenario1", system, ctx.settings.rates)
    await ctx.checked("scenario1", system)


async def sweep(
    ctx: Context,
    scenario: str,
    system: System,
    rates: Sequence[float],
    *,
    classes: Sequence[str] | None = None,
    until_saturated: bool = False,
) -> list[dict[str, Any]]:
    """Offer each rate in turn; stop once a rate fails at or above the comparison rate."""
    s = ctx.settings
    rows: list[dict[str, Any]] = []
    sweep_started = time.time()
    failures = 0
    pending = sorted(rates)
    while pending:
        rate = pending.pop(0)
        row, series = await step(ctx, scenario, system, rate, classes)
        for point in series:
            point["t"] += row["started"] - sweep_started
        rows.append(row)
        ctx.out.add(scenario, row)
        ctx.out.add_series(scenario, "latency_over_time", series)
        ctx.progress.done(
            f"  {system.name} W={rate:,.0f}/s: achieved {row['achieved_rate']:,.0f}/s, {row['events_per_s']:,.0f} "
            f"events/s, p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} max {row['max_ms']:.0f} ms, "
            f"server {row['server_cpu']:.2f} cores ({row['server_cpu_us_per_write']:,.0f} us/write) "
            f"{row['server_peak_rss_mb']:,.0f} MiB, "
            f"agents {row['agents_cpu']:.2f} writer {row['writer_cpu']:.2f} cores -> "
            f"{'held' if row['held'] else 'NOT held'}"
        )
        busiest = list(row["server_cpu_us_per_write_by_thread"].items())[:4]
        if busiest:
            ctx.progress.done("    server threads, us/write: " + ", ".join(f"{n} {us:,.0f}" for n, us in busiest))
        # Past the comparison rate (or for a ceiling) the first failure ends the sweep. Below it, one failure
        # may be noise; after two in a row the sweep goes straight to the comparison rate, which is always
        # measured, so that every system has a figure there.
        failures = 0 if row["held"] else failures + 1
        if failures and (until_saturated or rate >= s.compare_rate):
            break
        if failures >= 2:
            pending = [r for r in pending if r >= s.compare_rate][:1]
        await asyncio.sleep(1.0)  # let the backlog of a saturated step drain
    held = [r["offered_rate"] for r in rows if r["held"]]
    ctx.out.held_rate[f"{scenario}/{system.name}"] = max(held) if held else 0.0
    return rows


async def step(
    ctx: Context, scenario: str, system: System, rate: float, classes: Sequence[str] | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One rate: its row, and its per-second latency points (seconds from the step's start)."""
    s = ctx.settings
    fleet = system.fleet
    started = time.time()
    measure_from = started + s.warmup_seconds
    label = f"[{scenario}] {system.name} W={rate:,.0f}/s"
    async with ctx.progress.ticking(label, s.warmup_seconds + s.step_seconds, ctx.status(fleet)):
        reply = await system.drive(rate, s.warmup_seconds + s.step_seconds)
        measure_to = started + s.warmup_seconds + s.step_seconds
        await asyncio.sleep(1.3)  # the agents' last reports of this step
    drained = time.time()
    counted = fleet.window(measure_from, measure_to)
    latency = fleet.window(measure_from, drained)
    histogram = latency.merged(classes)
    server = system.sampler.window(measure_from, measure_to)
    ack = Histogram.from_json(reply["ack_latency"]) if "ack_latency" in reply else None
    summary = histogram.summary_ms()
    row: dict[str, Any] = {
        "system": system.name,
        "watchers": len(fleet.specs),
        "offered_rate": rate,
        "achieved_rate": reply["achieved_rate"],
        "events_per_s": counted.live_events / max(measure_to - measure_from, 1e-9),
        "bytes_per_s": counted.bytes / max(measure_to - measure_from, 1e-9),
        **summary,
        "server_cpu": server["cpu_cores"],
        "server_peak_rss_mb": server["peak_rss_mb"],
        "writer_cpu": reply["cpu_seconds"] / max(reply["duration"], 1e-9),
        "agents_cpu": counted.agent_cores,
        "ack_p99_ms": ack.percentile(99) / 1000 if ack else None,
        "errors": sum(latency.errors.values()),
        "started": started,
    }
    # The server's CPU per write and per delivered event: what the fan-out layer costs, at this rate.
    row["server_cpu_us_per_write"] = row["server_cpu"] / max(row["achieved_rate"], 1e-9) * 1e6
    row["server_cpu_us_per_event"] = row["server_cpu"] / max(row["events_per_s"], 1e-9) * 1e6
    # Where the first server process's CPU per write goes, by thread (epsync's: "main" runs the event loop,
    # "epsync-writer" the SQLite commits, "epsync-transpor" the gRPC transport): what a change must shrink.
    per_write = {
        name: cores / max(row["achieved_rate"], 1e-9) * 1e6
        for name, cores in system.sampler.threads_window(measure_from, measure_to).items()
    }
    row["server_cpu_us_per_write_by_thread"] = {name: us for name, us in per_write.items() if us >= 1}  # idle: left out
    row["held"] = bool(summary["count"] > 0 and row["p99_ms"] < s.p99_budget_ms and row["achieved_rate"] >= 0.95 * rate)
    series = percentile_rows(fleet.per_second(started, drained), system.name)
    return row, series


def percentile_rows(points: Sequence[dict[str, float]], label: str, shift: float = 0.0) -> list[dict[str, Any]]:
    """Per-second points in long form (one row per percentile), for a plot with one line each."""
    rows: list[dict[str, Any]] = []
    for point in points:
        for name, column in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
            rows.append({"t": point["t"] + shift, "percentile": f"{label} {name}", "latency_ms": point[column]})
    return rows
