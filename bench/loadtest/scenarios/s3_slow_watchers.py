"""Scenario 3, slow watchers: a tenth of the watchers stop reading while the others are measured.

epsync is restarted with small per-watcher bounds (`--slow-max-events`, `--slow-max-bytes`) and
the watchers resume. Every 1/`--stall-fraction`-th watcher (class `node-s` or `selector-s`, with a
small HTTP/2 window so its stall reaches the server quickly) stops reading: first through
`--stall-seconds` of steady churn, over which the others' latency is compared with a baseline of
everyone reading, then through a rollout that rewrites every endpoint of the stalled nodes
`--stall-rollout-rounds` times, past the server's bound. Then they read again: those cut off
(WATCHER_TOO_SLOW) resume, and scenario 6's check times how long until every view equals the store.
"""

from __future__ import annotations

import asyncio
import time

from bench.loadtest.context import Context, System
from bench.loadtest.scenarios.s1_churn import percentile_rows
from bench.loadtest.sut import EpsyncProcess
from bench.population import node_of

MiB = 1 << 20


async def run(ctx: Context, system: System) -> None:
    s = ctx.settings
    fleet, writer, server = system.fleet, system.writer, system.server
    assert writer is not None, "scenario 3 writes through the writer process"
    assert isinstance(server, EpsyncProcess), "scenario 3 restarts an epsync server with small bounds"
    stalled = [spec["id"] for spec in ctx.specs if str(spec["cls"]).endswith("-s")]
    stalled_ids = set(stalled)
    others = ["node", "selector"]
    rate = s.stall_rate or ctx.out.held_rate.get("scenario1/epsync") or s.rates[0]
    ctx.progress.done(
        f"scenario 3: {len(stalled)} of {len(ctx.specs):,} watchers stall for {s.stall_seconds:.0f} s "
        f"at W={rate:,.0f}/s (server bound {s.slow_max_events} events / {s.slow_max_bytes:,} bytes)"
    )
    await fleet.drop()
    await server.stop()
    await system.sampler.stop()
    server.extra_args = (
        "--watcher-max-events",
        str(s.slow_max_events),
        "--watcher-max-bytes",
        str(s.slow_max_bytes),
    )
    await server.start()
    sampler = system.sampler = ctx.sample(server.pid, rss_series="epsync")
    await writer.call("reset")
    await fleet.reconnect(fresh=False, within=s.sync_timeout)
    before = await fleet.counters()

    # Baseline: everyone reading.
    base_start = time.time()
    async with ctx.progress.ticking("[scenario3] baseline", s.warmup_seconds + s.step_seconds, ctx.status(fleet)):
        await system.drive(rate, s.warmup_seconds + s.step_seconds)
        await asyncio.sleep(1.3)
    baseline = fleet.window(base_start + s.warmup_seconds, time.time())
    base_rss = sampler.window(base_start, time.time())["peak_rss_mb"]
    # The stall: the paced rate (the others' latency is measured over it), then a rollout that rewrites
    # every endpoint of the stalled nodes until their backlog passes the server's bound.
    await fleet.stall(stalled)
    stall_start = time.time()
    async with ctx.progress.ticking("[scenario3] stalled", s.stall_seconds, ctx.status(fleet)):
        await system.drive(rate, s.stall_seconds)
        await asyncio.sleep(1.3)
    stall_end = time.time()
    during = fleet.window(stall_start, stall_end)
    stalled_nodes = {spec["id"] for spec in ctx.node_specs if spec["cls"] == "node-s"}
    rollout = [j for j in range(s.shape.endpoints) if node_of(j, s.shape) in stalled_nodes]
    rounds = s.stall_rollout_rounds
    async with ctx.progress.ticking(
        f"[scenario3] rollout on the stalled nodes ({rounds} x {len(rollout):,} writes)", 0, ctx.status(fleet)
    ):
        for _ in range(rounds):
            await writer.call("burst", endpoints=rollout, within=300)
        await asyncio.sleep(1.3)
    stall_rss = sampler.window(stall_start, time.time())["peak_rss_mb"]
    # Reading again: the cut-off ones get WATCHER_TOO_SLOW and resume.
    await fleet.unstall()
    resume_start = time.time()
    async with ctx.progress.ticking("[scenario3] resuming", 0, lambda: ""):
        # Scenario 6 waits until every view equals the store again, which the stalled watchers reach only
        # by reading what was queued for them and, where they were cut off, resuming.
        await ctx.checked("scenario3", system)
        if not ctx.wants(6):
            await asyncio.sleep(5)
    resumed_s = time.time() - resume_start
    await asyncio.sleep(0.5)
    after = await fleet.counters()
    cut = dict.fromkeys(("node-s", "selector-s"), 0)
    count = dict.fromkeys(("node-s", "selector-s"), 0)
    for spec in ctx.specs:
        if spec["id"] in stalled_ids:
            count[spec["cls"]] += 1
            if after[spec["id"]]["cutoffs"] > before[spec["id"]]["cutoffs"]:
                cut[spec["cls"]] += 1
    cut_elsewhere = sum(1 for i, c in after.items() if i not in stalled_ids and c["cutoffs"] > before[i]["cutoffs"])
    for name, window in (("baseline (all reading)", baseline), ("during the stall", during)):
        h = window.merged(others)
        ctx.out.add(
            "scenario3",
            {
                "phase": name,
                "watchers": "others (not stalled)",
                "write_rate": rate,
                "events_per_s": window.events_per_second,
                **h.summary_ms(),
                "server_peak_rss_mb": base_rss if "baseline" in name else stall_rss,
            },
        )
    row = {
        "phase": "stalled watchers",
        "stalled_node_watchers": count["node-s"],
        "stalled_selector_watchers": count["selector-s"],
        "cut_off_node": cut["node-s"],
        "cut_off_selector": cut["selector-s"],
        "others_cut_off": cut_elsewhere,
        "rollout_writes": rounds * len(rollout),
        "resumed_in_s": resumed_s,
        "server_peak_rss_mb": stall_rss,
    }
    ctx.out.add("scenario3", row)
    ctx.out.add_series(
        "scenario3",
        "rss",
        [
            {"seconds": t - base_start, "rss_mb": rss / MiB, "server": "epsync"}
            for t, _, rss in sampler.samples
            if t >= base_start
        ],
    )
    ctx.out.add_series(
        "scenario3",
        "latency_over_time",
        percentile_rows(fleet.per_second(base_start, stall_end, others), "others"),
    )
    ctx.progress.done(
        f"  others' p99 {baseline.merged(others).percentile(99) / 1000:.1f} ms before, "
        f"{during.merged(others).percentile(99) / 1000:.1f} ms during the stall; "
        f"server peak RSS {base_rss:,.0f} -> "
        f"{stall_rss:,.0f} MiB; cut off: {cut['node-s']}/{count['node-s']} stalled node watchers, "
        f"{cut['selector-s']}/{count['selector-s']} stalled selector watchers ({cut_elsewhere} others); "
        f"every view equal to the store {resumed_s:.1f} s after reading resumed"
    )
