"""`epsync bench`: the load test, epsync against etcd and a raw gRPC server, on one machine.

The orchestrator (this module) starts every system under test as its own process (an epsync server
on a SQLite store, an etcd member, a bare grpc.aio server) on free loopback ports with data in a
temporary directory, and load-generator processes beside them: one writer and `--workers` agent
processes that share the watchers. It samples the servers' CPU and memory from /proc and collects
the agents' once-a-second reports. Scenarios (numbers as in the issue):

1. steady churn: N node watchers + S selector watchers; sweep the write rate W upward; report the
   highest W held with p99 under the budget (100 ms);
2. reconnect storm: all node watchers drop and reconnect at once: (a) with their state and nothing
   changed, (b) with 1% of endpoints changed meanwhile, (c) without state;
3. slow watchers: 10% of the watchers stop reading, through steady churn and then a rollout that
   rewrites their nodes' endpoints past the server's per-watcher bound; the others' latency, the
   server's memory, and the stalled ones cut off (WATCHER_TOO_SLOW) and resuming without loss;
4. etcd side by side: scenarios 1 and 2 against etcd with the same payloads, the same node-agent
   shape (each watches its node's key prefix, re-lists after a reconnect) and the same writer rates,
   and epsync again with exactly that shape; every figure as an epsync/etcd ratio;
5. the raw gRPC ceiling: the same watchers fed pre-encoded events by a bare grpc.aio server;
6. correctness: after every scenario every watcher's view is compared with the store; any
   difference fails the run (exit status 1) loudly;
7. epsync as a cluster: scenario 1 again on `--replicas` epsync processes in front of one etcd
   (`serve --datastore etcd`), the watchers and the writer's streams spread over the replicas; its
   server figures are the replicas' and etcd's together, beside scenario 1's on the embedded store.

Every run is bounded (`--timeout`), and every process it started is ended on the way out, whatever
happened (and dies with the orchestrator even if it is killed: see `bench.loadtest.control`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import report
from bench.loadtest import check, procstat
from bench.loadtest.control import Child, Message
from bench.loadtest.fleet import Fleet
from bench.loadtest.histogram import Histogram
from bench.loadtest.options import Settings, add_arguments, settings_from
from bench.loadtest.sut import EpsyncProcess, EtcdProcess, Sampler, ServerProcess, etcd_binary, free_port, python_env
from bench.population import Membership, membership, node_name, node_of

MiB = 1 << 20


# --- progress ---------------------------------------------------------------------------------------


class Progress:
    """One status line on stderr, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self._width))
            self._width = len(text)
            sys.stderr.flush()
        elif time.monotonic() - self._last_print >= 5:
            self._last_print = time.monotonic()
            print(text, file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def ticking(self, label: str, seconds: float, status: Callable[[], str]) -> Any:
        """Redraw `label [bar] elapsed/total status` every half second while the block runs."""
        started = time.monotonic()

        async def loop() -> None:
            while True:
                elapsed = time.monotonic() - started
                filled = min(20, int(20 * elapsed / seconds)) if seconds > 0 else 20
                self.show(f"{label} [{'#' * filled}{'.' * (20 - filled)}] {elapsed:4.0f}/{seconds:.0f}s {status()}")
                await asyncio.sleep(0.5)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Everything measured, by scenario: rows for the tables and JSON, series for the plots."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    series: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    checks: list[check.CheckResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, scenario: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(scenario, []).append(row)

    def add_series(self, scenario: str, name: str, rows: Sequence[dict[str, Any]]) -> None:
        self.series.setdefault(scenario, {}).setdefault(name, []).extend(rows)

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.out = Outcome()
        self.progress = Progress()
        self.tmp = Path(tempfile.mkdtemp(prefix="epsync-bench-"))
        self.membership: Membership = membership(settings.shape, settings.selectors)
        self.specs = self._specs()
        self._cleanup: list[Callable[[], Awaitable[None]]] = []
        self.started = time.time()
        self.held_rate: dict[str, float] = {}
        self.samplers: dict[str, list[Sampler]] = {}  # per system, in order (a restart starts a new one)

    def _specs(self) -> list[Message]:
        """Watchers: node agents first, then selector watchers; every 1/stall_fraction-th one may stall."""
        step = max(1, round(1 / self.s.stall_fraction)) if self.s.stall_fraction > 0 else 0
        specs: list[Message] = []
        for n in range(self.s.nodes):
            stalls = bool(step) and n % step == 0
            window = self.s.stall_window_bytes if stalls else 0
            specs.append({"id": n, "cls": "node-s" if stalls else "node", "node": node_name(n), "small_window": window})
        for k in range(self.s.selectors):
            stalls = bool(step) and k % step == 0
            window = self.s.stall_window_bytes if stalls else 0
            specs.append(
                {
                    "id": self.s.nodes + k,
                    "cls": "selector-s" if stalls else "selector",
                    "selector": self.membership.selectors[k],
                    "small_window": window,
                }
            )
        return specs

    @property
    def node_specs(self) -> list[Message]:
        return [spec for spec in self.specs if "node" in spec]

    def wants(self, scenario: int) -> bool:
        return scenario in self.s.scenarios

    async def run(self) -> int:
        started = time.monotonic()
        print(self._header(), file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(self.s.timeout):
                if any(self.wants(n) for n in (1, 2, 3, 4)):
                    await self._guarded("epsync", self.epsync_phase)
                if self.wants(4):
                    await self._guarded("etcd", self.etcd_phase)
                if self.wants(5):
                    await self._guarded("raw", self.raw_phase)
                if self.wants(7):
                    await self._guarded("cluster", self.cluster_phase)
        except TimeoutError:
            self.out.errors.append(f"the run exceeded --timeout {self.s.timeout:.0f} s and was stopped")
        finally:
            await self._stop_all()
            if not self.s.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.write_results(time.monotonic() - started)
        return self.summary()

    async def _guarded(self, name: str, phase: Callable[[], Awaitable[None]]) -> None:
        """Run one phase; a failure is reported and the next phase still runs (its processes are stopped)."""
        try:
            await phase()
        except Exception as error:
            self.out.errors.append(f"{name}: {type(error).__name__}: {error}")
            self.progress.done(f"{name} phase FAILED: {error}")
        finally:
            await self._stop_all()

    def _later(self, stop: Callable[[], Awaitable[None]]) -> None:
        self._cleanup.append(stop)

    async def _stop_all(self) -> None:
        while self._cleanup:
            stop = self._cleanup.pop()
            with contextlib.suppress(Exception):
                await stop()

    def _header(self) -> str:
        s = self.s
        return (
            f"epsync bench: {s.nodes:,} node watchers x {s.per_node} endpoints = {s.shape.endpoints:,} endpoints, "
            f"{s.selectors} selector watchers, {s.workers} agent processes; scenarios "
            f"{','.join(map(str, s.scenarios))}; results in {s.out}"
        )

    # --- helpers ------------------------------------------------------------------------------

    async def start_writer(self, mode: str, target: str) -> Child:
        s = self.s
        argv = [
            sys.executable,
            "-m",
            "bench.loadtest.writer",
            "--mode",
            mode,
            "--target",
            target,
            "--nodes",
            str(s.nodes),
            "--per-node",
            str(s.per_node),
            "--namespaces",
            str(s.namespaces),
            "--seed",
            str(s.seed),
            "--window",
            str(s.writer_window),
            "--streams",
            str(s.writer_streams),
        ]
        writer = await Child.start(f"{mode}-writer", argv, self.tmp, python_env())
        self._later(writer.stop)
        await writer.call("prepare", within=600)
        return writer

    async def start_fleet(self, mode: str, target: str, specs: Sequence[Message]) -> tuple[Fleet, float]:
        fleet = Fleet(mode, target, self.s.workers, self.tmp)
        self._later(fleet.stop)
        started = time.monotonic()
        async with self.progress.ticking(f"{mode}: {len(specs):,} watchers syncing", 0, lambda: ""):
            await fleet.start(specs, within=self.s.sync_timeout)
        return fleet, time.monotonic() - started

    async def checked(
        self,
        scenario: str,
        system: str,
        read_store: Callable[[], Awaitable[check.Store]],
        fleet: Fleet,
        specs: Sequence[Message] | None = None,
    ) -> None:
        """Scenario 6 after `scenario`: every view against the store; a difference fails the run."""
        if not self.wants(6):
            return
        chosen = self.specs if specs is None else specs
        result = await check.check(scenario, system, read_store, fleet.views, chosen, self.membership)
        self.out.checks.append(result)
        if result.ok:
            self.progress.done(
                f"  correct: {system} after {scenario}: {result.watchers:,} views, {result.keys:,} keys equal the store"
            )
        else:
            self.progress.done(
                f"  CORRECTNESS FAILURE: {system} after {scenario}:\n    " + "\n    ".join(result.differences)
            )

    def _status(self, fleet: Fleet) -> Callable[[], str]:
        def status() -> str:
            if not fleet.reports:
                return ""
            now = time.time()
            w = fleet.window(now - 2.05, now)
            p99 = w.merged().percentile(99) / 1000
            return f"events {w.live_events / 2:,.0f}/s p99 {p99:,.1f} ms agents {w.agent_cores:.2f} cores"

        return status

    async def sweep(
        self,
        scenario: str,
        system: str,
        fleet: Fleet,
        drive: Callable[[float, float], Awaitable[Message]],
        sampler: Sampler,
        rates: Sequence[float],
        *,
        classes: Sequence[str] | None = None,
        until_saturated: bool = False,
    ) -> list[dict[str, Any]]:
        """Offer each rate in turn; stop once a rate fails at or above the comparison rate."""
        rows: list[dict[str, Any]] = []
        sweep_started = time.time()
        failures = 0
        pending = sorted(rates)
        while pending:
            rate = pending.pop(0)
            row, series = await self.step(scenario, system, fleet, drive, sampler, rate, classes)
            for point in series:
                point["t"] += row["started"] - sweep_started
            rows.append(row)
            self.out.add(scenario, row)
            self.out.add_series(scenario, "latency_over_time", series)
            self.progress.done(
                f"  {system} W={rate:,.0f}/s: achieved {row['achieved_rate']:,.0f}/s, {row['events_per_s']:,.0f} "
                f"events/s, p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} max {row['max_ms']:.0f} ms, "
                f"server {row['server_cpu']:.2f} cores {row['server_peak_rss_mb']:,.0f} MiB, "
                f"agents {row['agents_cpu']:.2f} writer {row['writer_cpu']:.2f} cores -> "
                f"{'held' if row['held'] else 'NOT held'}"
            )
            # Past the comparison rate (or for a ceiling) the first failure ends the sweep. Below it, one failure
            # may be noise; after two in a row the sweep goes straight to the comparison rate, which is always
            # measured, so that every system has a figure there.
            failures = 0 if row["held"] else failures + 1
            if failures and (until_saturated or rate >= self.s.compare_rate):
                break
            if failures >= 2:
                pending = [r for r in pending if r >= self.s.compare_rate][:1]
            await asyncio.sleep(1.0)  # let the backlog of a saturated step drain
        held = [r["offered_rate"] for r in rows if r["held"]]
        self.held_rate[f"{scenario}/{system}"] = max(held) if held else 0.0
        return rows

    async def step(
        self,
        scenario: str,
        system: str,
        fleet: Fleet,
        drive: Callable[[float, float], Awaitable[Message]],
        sampler: Sampler,
        rate: float,
        classes: Sequence[str] | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        s = self.s
        started = time.time()
        measure_from = started + s.warmup_seconds
        label = f"[{scenario}] {system} W={rate:,.0f}/s"
        async with self.progress.ticking(label, s.warmup_seconds + s.step_seconds, self._status(fleet)):
            reply = await drive(rate, s.warmup_seconds + s.step_seconds)
            measure_to = started + s.warmup_seconds + s.step_seconds
            await asyncio.sleep(1.3)  # the agents' last reports of this step
        drained = time.time()
        counted = fleet.window(measure_from, measure_to)
        latency = fleet.window(measure_from, drained)
        histogram = latency.merged(classes)
        server = sampler.window(measure_from, measure_to)
        ack = Histogram.from_json(reply["ack_latency"]) if "ack_latency" in reply else None
        summary = histogram.summary_ms()
        row: dict[str, Any] = {
            "system": system,
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
        row["held"] = bool(
            summary["count"] > 0 and row["p99_ms"] < s.p99_budget_ms and row["achieved_rate"] >= 0.95 * rate
        )
        series = _percentile_rows(fleet.per_second(started, drained), system)
        return row, series

    # --- epsync --------------------------------------------------------------------------------

    async def start_epsync(self, data_dir: Path, extra: tuple[str, ...] = ()) -> tuple[EpsyncProcess, Sampler]:
        server = EpsyncProcess(data_dir, self.tmp / "epsync-server.log", extra)
        self._later(server.stop)
        await server.start()
        sampler = Sampler(server.pid)
        sampler.start()
        self._later(sampler.stop)
        self.samplers.setdefault("epsync", []).append(sampler)
        return server, sampler

    async def epsync_phase(self) -> None:
        s = self.s
        server, sampler = await self.start_epsync(self.tmp / "epsync-data")
        writer = await self.start_writer("epsync", server.target)
        load = await self._load("epsync", writer, sampler)
        self.out.add("load", load)

        fleet, seconds = await self.start_fleet("epsync", server.target, self.specs)
        self.out.add(
            "load",
            {
                "system": "epsync",
                "what": f"initial sync of {len(self.specs):,} watchers",
                "seconds": seconds,
                "server_peak_rss_mb": sampler.window(time.time() - seconds - 1, time.time())["peak_rss_mb"],
            },
        )
        self.progress.done(f"epsync: {len(self.specs):,} watchers in sync in {seconds:.1f} s")

        def drive(rate: float, duration: float) -> Awaitable[Message]:
            return writer.call("run", rate=rate, duration=duration, within=duration + 120)

        store = lambda: check.epsync_store(server.target)  # noqa: E731
        if self.wants(1):
            self.progress.done("scenario 1: steady churn on epsync (node and selector watchers)")
            await self.sweep("scenario1", "epsync", fleet, drive, sampler, self.s.rates)
            await self.checked("scenario1", "epsync", store, fleet)
        if self.wants(2):
            await self.storms("epsync", fleet, writer, sampler, server)
            await self.checked("scenario2", "epsync", store, fleet)
        if self.wants(4):
            # Like for like with etcd: node watchers only (the selector watchers have no etcd equivalent).
            selector_ids = [spec["id"] for spec in self.specs if "selector" in spec]
            await fleet.drop(selector_ids)
            self.progress.done("scenario 4: epsync with the node watchers only, as etcd runs")
            await self.sweep("scenario4", "epsync", fleet, drive, sampler, self.s.rates)
            await self.checked("scenario4", "epsync", store, fleet, self.node_specs)
            await fleet.reconnect(fresh=False, within=s.sync_timeout, ids=selector_ids)
        if self.wants(3):
            await self.slow_watchers(fleet, writer, server, sampler)

    async def _load(self, system: str, writer: Child, sampler: Sampler) -> dict[str, Any]:
        total = self.s.shape.endpoints
        started = time.time()

        def status() -> str:
            return f"server {procstat_rss(sampler)}"

        async with self.progress.ticking(f"{system}: loading {total:,} endpoints", 0, status):
            reply = await writer.call("load", within=self.s.timeout)
        row = {
            "system": system,
            "what": f"load {total:,} endpoints",
            "seconds": reply["seconds"],
            "writes_per_s": reply["rate"],
            **sampler.window(started, time.time()),
        }
        self.progress.done(f"{system}: loaded {total:,} endpoints in {reply['seconds']:.1f} s ({reply['rate']:,.0f}/s)")
        return row

    async def storms(self, system: str, fleet: Fleet, writer: Child, sampler: Sampler, server: ServerProcess) -> None:
        """Scenario 2: every node watcher drops and reconnects at once, three ways."""
        s = self.s
        ids = [spec["id"] for spec in self.node_specs]
        changes = max(1, round(s.storm_change_fraction * s.shape.endpoints))
        self.progress.done(f"scenario 2: reconnect storms on {system} ({len(ids):,} node watchers)")
        for storm, fresh, change in (("a", False, 0), ("b", False, changes), ("c", True, 0)):
            await fleet.drop(ids)
            if change:
                await writer.call("burst", count=change, within=300)
            await asyncio.sleep(0.5)
            before_cpu = procstat.cpu_seconds(server.pid)
            started = time.time()
            label = f"[scenario2] {system} storm ({storm})"
            async with self.progress.ticking(label, 0, lambda: ""):
                reply = await fleet.reconnect(fresh=fresh, within=s.sync_timeout, ids=ids)
            ended = time.time()
            times = sorted(v[0] for v in reply["sync"].values())
            received = sum(v[1] for v in reply["sync"].values())
            row = {
                "system": system,
                "storm": storm,
                "description": {
                    "a": "known versions, nothing changed",
                    "b": f"known versions, {changes:,} endpoints ({s.storm_change_fraction:.0%}) changed",
                    "c": "no state: full initial events",
                }[storm],
                "watchers": len(ids),
                "all_in_sync_s": ended - started,
                "p50_sync_s": _quantile(times, 0.5),
                "p99_sync_s": _quantile(times, 0.99),
                "bytes_received": received,
                "server_cpu_s": procstat.cpu_seconds(server.pid) - before_cpu,
                "server_peak_rss_mb": sampler.window(started - 0.5, ended + 0.5)["peak_rss_mb"],
            }
            self.out.add("scenario2", row)
            curve = [
                {"seconds": t, "in_sync": (i + 1) / len(times), "storm": f"{system} ({storm})"}
                for i, t in enumerate(times)
            ]
            self.out.add_series(
                "scenario2", "completion", [{"seconds": 0.0, "in_sync": 0.0, "storm": f"{system} ({storm})"}, *curve]
            )
            self.progress.done(
                f"  {system} storm ({storm}): all {len(ids):,} in sync in {row['all_in_sync_s']:.2f} s "
                f"(p50 {row['p50_sync_s']:.2f} s), {received:,} bytes received, server "
                f"{row['server_cpu_s']:.1f} CPU s, peak RSS "
                f"{row['server_peak_rss_mb']:,.0f} MiB"
            )

    async def slow_watchers(self, fleet: Fleet, writer: Child, server: EpsyncProcess, sampler: Sampler) -> None:
        """Scenario 3: the server restarted with small per-watcher bounds; 10% of the watchers stop reading."""
        s = self.s
        stalled = [spec["id"] for spec in self.specs if str(spec["cls"]).endswith("-s")]
        stalled_ids = set(stalled)
        others = ["node", "selector"]
        rate = s.stall_rate or self.held_rate.get("scenario1/epsync") or s.rates[0]
        self.progress.done(
            f"scenario 3: {len(stalled)} of {len(self.specs):,} watchers stall for {s.stall_seconds:.0f} s "
            f"at W={rate:,.0f}/s (server bound {s.slow_max_events} events / {s.slow_max_bytes:,} bytes)"
        )
        await fleet.drop()
        await server.stop()
        await sampler.stop()
        server.extra_args = (
            "--watcher-max-events",
            str(s.slow_max_events),
            "--watcher-max-bytes",
            str(s.slow_max_bytes),
        )
        await server.start()
        sampler = Sampler(server.pid)
        sampler.start()
        self._later(sampler.stop)
        self.samplers.setdefault("epsync", []).append(sampler)
        await writer.call("reset")
        await fleet.reconnect(fresh=False, within=s.sync_timeout)
        before = await fleet.counters()

        def drive(seconds: float) -> Awaitable[Message]:
            return writer.call("run", rate=rate, duration=seconds, within=seconds + 120)

        # Baseline: everyone reading.
        base_start = time.time()
        async with self.progress.ticking(
            "[scenario3] baseline", s.warmup_seconds + s.step_seconds, self._status(fleet)
        ):
            await drive(s.warmup_seconds + s.step_seconds)
            await asyncio.sleep(1.3)
        baseline = fleet.window(base_start + s.warmup_seconds, time.time())
        base_rss = sampler.window(base_start, time.time())["peak_rss_mb"]
        # The stall: the paced rate (the others' latency is measured over it), then a rollout that rewrites
        # every endpoint of the stalled nodes until their backlog passes the server's bound.
        await fleet.stall(stalled)
        stall_start = time.time()
        async with self.progress.ticking("[scenario3] stalled", s.stall_seconds, self._status(fleet)):
            await drive(s.stall_seconds)
            await asyncio.sleep(1.3)
        stall_end = time.time()
        during = fleet.window(stall_start, stall_end)
        stalled_nodes = {spec["id"] for spec in self.node_specs if spec["cls"] == "node-s"}
        rollout = [j for j in range(s.shape.endpoints) if node_of(j, s.shape) in stalled_nodes]
        rounds = s.stall_rollout_rounds
        async with self.progress.ticking(
            f"[scenario3] rollout on the stalled nodes ({rounds} x {len(rollout):,} writes)", 0, self._status(fleet)
        ):
            for _ in range(rounds):
                await writer.call("burst", endpoints=rollout, within=300)
            await asyncio.sleep(1.3)
        stall_rss = sampler.window(stall_start, time.time())["peak_rss_mb"]
        # Reading again: the cut-off ones get WATCHER_TOO_SLOW and resume.
        await fleet.unstall()
        resume_start = time.time()
        async with self.progress.ticking("[scenario3] resuming", 0, lambda: ""):
            # Scenario 6 waits until every view equals the store again, which the stalled watchers reach only
            # by reading what was queued for them and, where they were cut off, resuming.
            await self.checked("scenario3", "epsync", lambda: check.epsync_store(server.target), fleet)
            if not self.wants(6):
                await asyncio.sleep(5)
        resumed_s = time.time() - resume_start
        await asyncio.sleep(0.5)
        after = await fleet.counters()
        cut = dict.fromkeys(("node-s", "selector-s"), 0)
        count = dict.fromkeys(("node-s", "selector-s"), 0)
        for spec in self.specs:
            if spec["id"] in stalled_ids:
                count[spec["cls"]] += 1
                if after[spec["id"]]["cutoffs"] > before[spec["id"]]["cutoffs"]:
                    cut[spec["cls"]] += 1
        cut_elsewhere = sum(1 for i, c in after.items() if i not in stalled_ids and c["cutoffs"] > before[i]["cutoffs"])
        for name, window in (("baseline (all reading)", baseline), ("during the stall", during)):
            h = window.merged(others)
            self.out.add(
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
        self.out.add("scenario3", row)
        self.out.add_series(
            "scenario3",
            "rss",
            [
                {"seconds": t - base_start, "rss_mb": rss / MiB, "server": "epsync"}
                for t, _, rss in sampler.samples
                if t >= base_start
            ],
        )
        self.out.add_series(
            "scenario3",
            "latency_over_time",
            _percentile_rows(fleet.per_second(base_start, stall_end, others), "others"),
        )
        self.progress.done(
            f"  others' p99 {baseline.merged(others).percentile(99) / 1000:.1f} ms before, "
            f"{during.merged(others).percentile(99) / 1000:.1f} ms during the stall; "
            f"server peak RSS {base_rss:,.0f} -> "
            f"{stall_rss:,.0f} MiB; cut off: {cut['node-s']}/{count['node-s']} stalled node watchers, "
            f"{cut['selector-s']}/{count['selector-s']} stalled selector watchers ({cut_elsewhere} others); "
            f"every view equal to the store {resumed_s:.1f} s after reading resumed"
        )

    def rss_series(self) -> list[dict[str, Any]]:
        """Each server's RSS over its phase of the run, one point a second, from the phase's start."""
        rows: list[dict[str, Any]] = []
        for system, samplers in self.samplers.items():
            samples = [sample for sampler in samplers for sample in sampler.samples]
            if samples:
                t0 = samples[0][0]
                rows += [{"seconds": t - t0, "rss_mb": rss / MiB, "server": system} for t, _, rss in samples[::4]]
        return rows

    # --- etcd ----------------------------------------------------------------------------------

    async def etcd_phase(self) -> None:
        s = self.s
        server = EtcdProcess(etcd_binary(s.etcd_binary), self.tmp / "etcd-data", self.tmp / "etcd.log")
        self._later(server.stop)
        await server.start()
        sampler = Sampler(server.pid)
        sampler.start()
        self._later(sampler.stop)
        self.samplers.setdefault("etcd", []).append(sampler)
        writer = await self.start_writer("etcd", server.target)
        self.out.add("load", await self._load("etcd", writer, sampler))
        specs = self.node_specs
        fleet, seconds = await self.start_fleet("etcd", server.target, specs)
        self.out.add("load", {"system": "etcd", "what": f"initial sync of {len(specs):,} watchers", "seconds": seconds})
        self.progress.done(f"etcd: {len(specs):,} node watchers in sync in {seconds:.1f} s")

        def drive(rate: float, duration: float) -> Awaitable[Message]:
            return writer.call("run", rate=rate, duration=duration, within=duration + 120)

        store = lambda: check.etcd_store(server.target)  # noqa: E731
        self.progress.done("scenario 4: steady churn on etcd (node watchers)")
        await self.sweep("scenario4", "etcd", fleet, drive, sampler, self.s.rates)
        await self.checked("scenario4", "etcd", store, fleet, specs)
        await self.storms("etcd", fleet, writer, sampler, server)
        await self.checked("scenario2", "etcd", store, fleet, specs)

    # --- epsync replicas on etcd ----------------------------------------------------------------

    @property
    def cluster_system(self) -> str:
        return f"epsync x{self.s.replicas} on etcd"

    async def cluster_phase(self) -> None:
        s = self.s
        etcd = EtcdProcess(etcd_binary(s.etcd_binary), self.tmp / "cluster-etcd-data", self.tmp / "cluster-etcd.log")
        self._later(etcd.stop)
        await etcd.start()
        datastore = ("--datastore", "etcd", "--etcd-endpoints", etcd.target, "--etcd-prefix", "/epsync/v1/")
        replicas: list[EpsyncProcess] = []
        for i in range(s.replicas):
            replica = EpsyncProcess(self.tmp / f"replica-{i}", self.tmp / f"replica-{i}.log", datastore)
            self._later(replica.stop)
            await replica.start()
            replicas.append(replica)
        # The cluster's cost is all of it: every replica and the etcd behind them.
        sampler = Sampler(etcd.pid, others=tuple(replica.pid for replica in replicas))
        sampler.start()
        self._later(sampler.stop)
        system = self.cluster_system
        self.samplers.setdefault(system, []).append(sampler)
        targets = ",".join(replica.target for replica in replicas)  # agents and write streams take turns
        writer = await self.start_writer("epsync", targets)
        self.out.add("load", await self._load(system, writer, sampler))
        fleet, seconds = await self.start_fleet("epsync", targets, self.specs)
        what = f"initial sync of {len(self.specs):,} watchers over {s.replicas} replicas"
        self.out.add("load", {"system": system, "what": what, "seconds": seconds})
        self.progress.done(f"{system}: {len(self.specs):,} watchers in sync in {seconds:.1f} s")

        def drive(rate: float, duration: float) -> Awaitable[Message]:
            return writer.call("run", rate=rate, duration=duration, within=duration + 120)

        self.progress.done(f"scenario 7: steady churn on {system} (node and selector watchers)")
        await self.sweep("scenario7", system, fleet, drive, sampler, s.rates)
        # Each replica's views against one replica's store: the writes end before the check.
        await self.checked("scenario7", system, lambda: check.epsync_store(replicas[-1].target), fleet)

    # --- raw gRPC ------------------------------------------------------------------------------

    async def raw_phase(self) -> None:
        s = self.s
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "bench.loadtest.rawserver",
            "--port",
            str(port),
            "--nodes",
            str(s.nodes),
            "--per-node",
            str(s.per_node),
            "--selectors",
            str(s.selectors),
            "--namespaces",
            str(s.namespaces),
            "--seed",
            str(s.seed),
        ]
        raw = await Child.start("raw-server", argv, self.tmp, python_env())
        self._later(raw.stop)
        await raw.call("prepare", within=600)
        sampler = Sampler(raw.pid)
        sampler.start()
        self._later(sampler.stop)
        fleet, seconds = await self.start_fleet("raw", f"127.0.0.1:{port}", self.specs)
        self.progress.done(f"scenario 5: raw gRPC server, {len(self.specs):,} watchers connected in {seconds:.1f} s")

        async def drive(rate: float, duration: float) -> Message:
            return await raw.call("run", rate=rate, duration=duration, within=duration + 120)

        async def store() -> check.Store:
            reply = await raw.call("store", within=120)
            return {key: (node, version) for key, (node, version) in reply["store"].items()}

        await self.sweep("scenario5", "raw", fleet, drive, sampler, s.raw_rates, until_saturated=True)
        await self.checked("scenario5", "raw", store, fleet)

    # --- results -------------------------------------------------------------------------------

    def comparisons(self) -> list[dict[str, Any]]:
        """Scenario 4's epsync/etcd ratios, and scenario 5's share of the raw ceiling, against the targets."""
        rows: list[dict[str, Any]] = []
        out = self.out.rows

        def at(scenario: str, system: str, rate: float) -> dict[str, Any] | None:
            return next((r for r in out.get(scenario, []) if r["system"] == system and r["offered_rate"] == rate), None)

        def add(
            metric: str,
            epsync: float | None,
            other: float | None,
            target: str = "",
            good: Callable[[float], bool] | None = None,
            against: str = "etcd",
        ) -> None:
            ratio = epsync / other if epsync is not None and other else None
            met = None if ratio is None or good is None else good(ratio)
            rows.append(
                {"metric": metric, "epsync": epsync, against: other, "ratio": ratio, "target": target, "met": met}
            )

        e_held = self.held_rate.get("scenario4/epsync")
        k_held = self.held_rate.get("scenario4/etcd")
        if e_held is not None or k_held is not None:
            add("highest write rate held, p99 < budget (writes/s)", e_held, k_held, ">= 1.5", lambda r: r >= 1.5)
        rate = self.s.compare_rate
        e_at, k_at = at("scenario4", "epsync", rate), at("scenario4", "etcd", rate)
        if e_at or k_at:
            add(
                f"p99 latency at {rate:,.0f} writes/s (ms)",
                _get(e_at, "p99_ms"),
                _get(k_at, "p99_ms"),
                "<= 0.5",
                lambda r: r <= 0.5,
            )
            add(f"p50 latency at {rate:,.0f} writes/s (ms)", _get(e_at, "p50_ms"), _get(k_at, "p50_ms"))
        e_rss = max(
            (r["server_peak_rss_mb"] for r in out.get("scenario4", []) if r["system"] == "epsync"), default=None
        )
        k_rss = max((r["server_peak_rss_mb"] for r in out.get("scenario4", []) if r["system"] == "etcd"), default=None)
        if e_rss or k_rss:
            add("peak server RSS, steady churn (MiB)", e_rss, k_rss, "<= 0.33", lambda r: r <= 1 / 3)
        e_rss1 = max((r["server_peak_rss_mb"] for r in out.get("scenario1", [])), default=None)
        if e_rss1 and k_rss:
            add(
                "peak server RSS, scenario 1 with selector watchers (MiB)",
                e_rss1,
                k_rss,
                "<= 0.33",
                lambda r: r <= 1 / 3,
            )
        for storm in ("a", "b", "c"):
            e = next((r for r in out.get("scenario2", []) if r["system"] == "epsync" and r["storm"] == storm), None)
            k = next((r for r in out.get("scenario2", []) if r["system"] == "etcd" and r["storm"] == storm), None)
            if e or k:
                a = storm == "a"
                add(
                    f"storm ({storm}): time until all in sync (s)",
                    _get(e, "all_in_sync_s"),
                    _get(k, "all_in_sync_s"),
                    "<= 0.1" if a else "",
                    (lambda r: r <= 0.1) if a else None,
                )
                add(
                    f"storm ({storm}): bytes received",
                    _get(e, "bytes_received"),
                    _get(k, "bytes_received"),
                    "<= 0.05" if a else "",
                    (lambda r: r <= 0.05) if a else None,
                )
                add(
                    f"storm ({storm}): server peak RSS (MiB)",
                    _get(e, "server_peak_rss_mb"),
                    _get(k, "server_peak_rss_mb"),
                )
        cluster = self.cluster_system
        c_held, q_held = self.held_rate.get(f"scenario7/{cluster}"), self.held_rate.get("scenario1/epsync")
        if c_held is not None:
            add(f"{cluster}: highest write rate held (writes/s)", c_held, q_held, against="sqlite")
            c_at, q_at = at("scenario7", cluster, rate), at("scenario1", "epsync", rate)
            add(
                f"{cluster}: p99 at {rate:,.0f} writes/s (ms)",
                _get(c_at, "p99_ms"),
                _get(q_at, "p99_ms"),
                against="sqlite",
            )
            add(
                f"{cluster}: p50 at {rate:,.0f} writes/s (ms)",
                _get(c_at, "p50_ms"),
                _get(q_at, "p50_ms"),
                against="sqlite",
            )
            add(
                f"{cluster}: servers' CPU at {rate:,.0f} writes/s (cores)",
                _get(c_at, "server_cpu"),
                _get(q_at, "server_cpu"),
                against="sqlite",
            )
            c_rss = max((r["server_peak_rss_mb"] for r in out.get("scenario7", [])), default=None)
            add(f"{cluster}: peak RSS, replicas + etcd (MiB)", c_rss, e_rss1, against="sqlite")
        raw_rows = out.get("scenario5", [])
        if raw_rows and out.get("scenario1"):
            raw_max = max(r["events_per_s"] for r in raw_rows)
            e_max = max(r["events_per_s"] for r in out["scenario1"])
            add(
                "delivered events/s, best of the sweep (raw = ceiling)",
                e_max,
                raw_max,
                ">= 0.5",
                lambda r: r >= 0.5,
                against="raw",
            )
            raw_held = max((r["events_per_s"] for r in raw_rows if r["held"]), default=0.0)
            e_held_ev = max((r["events_per_s"] for r in out["scenario1"] if r["held"]), default=0.0)
            add("delivered events/s with p99 < budget", e_held_ev, raw_held, against="raw")
        return rows

    def write_results(self, seconds: float) -> None:
        s = self.s
        parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
        parameters["endpoints"] = s.shape.endpoints
        parameters["run_seconds"] = round(seconds, 1)
        out = s.out
        o = self.out
        latency_plot = report.Plot(
            x="t",
            y="latency_ms",
            series="percentile",
            title="Latency per second (all steps)",
            log_y=True,
            data="latency_over_time",
            suffix="latency",
            style="-",
            threshold=s.p99_budget_ms,
        )
        throughput = report.Plot(
            x="offered_rate", y="events_per_s", series="system", title="Delivered events/s against offered write rate"
        )
        for scenario in ("scenario1", "scenario4", "scenario5", "scenario7"):
            if scenario in o.rows:
                report.write(
                    scenario,
                    parameters,
                    o.rows[scenario],
                    throughput,
                    out,
                    series=o.series.get(scenario),
                    plots=[latency_plot],
                    extra={"notes": o.notes.get(scenario, [])},
                )
        if "scenario2" in o.rows:
            completion = report.Plot(
                x="seconds",
                y="in_sync",
                series="storm",
                title="Reconnect storm: share in sync",
                data="completion",
                suffix="completion",
                style="-",
                log_x=True,
            )
            report.write(
                "scenario2",
                parameters,
                o.rows["scenario2"],
                None,
                out,
                series=o.series.get("scenario2"),
                plots=[completion],
            )
        if "scenario3" in o.rows:
            memory = report.Plot(
                x="seconds",
                y="rss_mb",
                series="server",
                title="Scenario 3: server RSS",
                data="rss",
                suffix="memory",
                style="-",
            )
            stall_latency = replace(latency_plot, title="Scenario 3: the others' latency, before and during the stall")
            report.write(
                "scenario3",
                parameters,
                o.rows["scenario3"],
                None,
                out,
                series=o.series.get("scenario3"),
                plots=[memory, stall_latency],
            )
        if o.checks or self.wants(6):
            report.write(
                "scenario6",
                parameters,
                [c.row() for c in o.checks],
                None,
                out,
                extra={"differences": {f"{c.scenario}/{c.system}": c.differences for c in o.checks}},
            )
        comparisons = self.comparisons()
        memory_plot = report.Plot(
            x="seconds",
            y="rss_mb",
            series="server",
            title="Server RSS over the run",
            data="rss",
            suffix="memory",
            style="-",
        )
        throughput_rows = [
            {**row, "system": f"{row['system']} ({label})"}
            for scenario, label in (
                ("scenario1", "node+selector"),
                ("scenario4", "node only"),
                ("scenario5", "node+selector"),
                ("scenario7", "node+selector"),
            )
            for row in o.rows.get(scenario, [])
        ]
        against_rate = report.Plot(
            x="offered_rate", y="events_per_s", series="system", log_x=True, log_y=True, title="", data="throughput"
        )
        throughput_plot = replace(
            against_rate, title="Delivered events/s against offered write rate", suffix="throughput"
        )
        achieved_plot = replace(
            against_rate, y="achieved_rate", title="Achieved against offered write rate", suffix="writes"
        )
        p99_plot = replace(
            against_rate,
            y="p99_ms",
            title="p99 latency against offered write rate",
            suffix="p99",
            threshold=s.p99_budget_ms,
        )
        report.write(
            "summary",
            parameters,
            comparisons,
            None,
            out,
            series={"rss": self.rss_series(), "load": o.rows.get("load", []), "throughput": throughput_rows},
            plots=[memory_plot, throughput_plot, achieved_plot, p99_plot],
            extra={"errors": o.errors},
        )

    def summary(self) -> int:
        o = self.out
        print()
        tables = (
            ("load", "Loading and initial sync", ["system", "what", "seconds", "writes_per_s", "peak_rss_mb"]),
            ("scenario1", "Scenario 1: steady churn (node + selector watchers)", SWEEP_COLUMNS),
            (
                "scenario2",
                "Scenario 2: reconnect storms (node watchers)",
                [
                    "system",
                    "storm",
                    "watchers",
                    "all_in_sync_s",
                    "p50_sync_s",
                    "p99_sync_s",
                    "bytes_received",
                    "server_cpu_s",
                    "server_peak_rss_mb",
                ],
            ),
            (
                "scenario3",
                "Scenario 3: slow watchers",
                [
                    "phase",
                    "watchers",
                    "write_rate",
                    "events_per_s",
                    "p50_ms",
                    "p99_ms",
                    "max_ms",
                    "server_peak_rss_mb",
                    "stalled_node_watchers",
                    "cut_off_node",
                    "stalled_selector_watchers",
                    "cut_off_selector",
                    "others_cut_off",
                    "resumed_in_s",
                ],
            ),
            ("scenario4", "Scenario 4: epsync and etcd side by side (node watchers only)", SWEEP_COLUMNS),
            ("scenario5", "Scenario 5: raw gRPC ceiling (same watchers)", SWEEP_COLUMNS),
            (
                "scenario7",
                f"Scenario 7: steady churn on {self.cluster_system} (server figures: replicas + etcd)",
                SWEEP_COLUMNS,
            ),
        )
        for key, title, columns in tables:
            if o.rows.get(key):
                print(f"\n{title}")
                report.print_table(o.rows[key], columns)
        comparisons = self.comparisons()
        if comparisons:
            print("\nRatios (epsync / etcd, epsync / raw ceiling, cluster / embedded store), against the targets")
            report.print_table(comparisons, ["metric", "epsync", "etcd", "raw", "sqlite", "ratio", "target", "met"])
        if o.checks:
            print("\nScenario 6: correctness (every watcher's view against the store)")
            report.print_table(
                [c.row() for c in o.checks], ["scenario", "system", "watchers", "keys", "seconds_to_converge", "result"]
            )
        failed = [c for c in o.checks if not c.ok]
        for c in failed:
            print(f"\nCORRECTNESS FAILED: {c.system} after {c.scenario}:", file=sys.stderr)
            for line in c.differences:
                print(f"  {line}", file=sys.stderr)
        for error in o.errors:
            print(f"\nERROR: {error}", file=sys.stderr)
        return 1 if failed or o.errors else 0


SWEEP_COLUMNS = [
    "system",
    "watchers",
    "offered_rate",
    "achieved_rate",
    "events_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "server_cpu",
    "server_peak_rss_mb",
    "writer_cpu",
    "agents_cpu",
    "held",
]


def procstat_rss(sampler: Sampler) -> str:
    if not sampler.samples:
        return ""
    return f"RSS {sampler.samples[-1][2] / MiB:,.0f} MiB"


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else float(row[key])


def _percentile_rows(points: Sequence[dict[str, float]], label: str, shift: float = 0.0) -> list[dict[str, Any]]:
    """Per-second points in long form (one row per percentile), for a plot with one line each."""
    rows: list[dict[str, Any]] = []
    for point in points:
        for name, column in (("p50", "p50_ms"), ("p99", "p99_ms"), ("max", "max_ms")):
            rows.append({"t": point["t"] + shift, "percentile": f"{label} {name}", "latency_ms": point[column]})
    return rows


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def main(args: argparse.Namespace) -> int:
    """Run `epsync bench` with parsed arguments; the exit status (0: every scenario ran and was correct)."""
    settings = settings_from(args)
    return asyncio.run(Bench(settings).run())


def standalone() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest.run", description=__doc__.split("\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))


if __name__ == "__main__":
    standalone()
