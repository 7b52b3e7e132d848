"""The load test's orchestrator: epsync against etcd and a raw gRPC server, on one machine.

    python -m bench.loadtest [--smoke] [--scenarios 1,2,6] ...   (make bench; --help lists every flag)

It starts every system under test as its own process (an epsync server on a SQLite store, an etcd
member, a bare grpc.aio server, epsync replicas on one etcd) on free loopback ports with data in a
temporary directory, and load-generator processes beside them: one writer and `--workers` agent
processes that share the watchers. It samples the servers' CPU and memory from /proc and collects
the agents' once-a-second reports. On each system it runs the chosen scenarios
(`bench.loadtest.scenarios`, one module each), every one followed by scenario 6's check of every
watcher's view against the store, and at the end `bench.loadtest.results` writes the JSON and plots
and prints the summary. The phases, one system each, and the scenarios that run in them:

- epsync on SQLite: 1, 2, 4 (node watchers only), then 3 (which restarts it with small bounds);
- etcd: 4 (the sweep, then scenario 2's storms);
- the raw gRPC server: 5;
- epsync replicas on etcd: 7.

A phase that fails is reported and the next one still runs. Every run is bounded (`--timeout`),
and every process it started is ended on the way out, whatever happened (and dies with the
orchestrator even if it is killed: see `bench.loadtest.control`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.loadtest import results
from bench.loadtest.context import Context, System
from bench.loadtest.control import Child, Message
from bench.loadtest.fleet import Fleet, build_go_agents
from bench.loadtest.options import Settings, add_arguments, settings_from
from bench.loadtest.progress import Progress
from bench.loadtest.results import Outcome
from bench.loadtest.scenarios import s1_churn, s2_storms, s3_slow_watchers, s4_etcd, s5_raw, s6_correctness, s7_cluster
from bench.loadtest.sut import EpsyncProcess, EtcdProcess, Sampler, etcd_binary, free_port, python_env
from bench.population import Membership, membership, node_name

MiB = 1 << 20


def watcher_specs(s: Settings, members: Membership) -> list[Message]:
    """Watchers: node agents first, then selector watchers; every 1/stall_fraction-th one may stall."""
    step = max(1, round(1 / s.stall_fraction)) if s.stall_fraction > 0 else 0
    specs: list[Message] = []
    for n in range(s.nodes):
        stalls = bool(step) and n % step == 0
        window = s.stall_window_bytes if stalls else 0
        specs.append({"id": n, "cls": "node-s" if stalls else "node", "node": node_name(n), "small_window": window})
    for k in range(s.selectors):
        stalls = bool(step) and k % step == 0
        window = s.stall_window_bytes if stalls else 0
        specs.append(
            {
                "id": s.nodes + k,
                "cls": "selector-s" if stalls else "selector",
                "selector": members.selectors[k],
                "small_window": window,
            }
        )
    return specs


class Bench:
    """One run: the phases in order, each system's processes stopped at the end of its phase."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.out = Outcome()
        self.progress = Progress()
        self.tmp = Path(tempfile.mkdtemp(prefix="epsync-bench-"))
        members = membership(settings.shape, settings.selectors)
        specs = watcher_specs(settings, members)
        self.ctx = Context(settings, specs, members, self.tmp, self.out, self.progress)
        self.go_agents: Path | None = None  # the built Go agent, with --agents go

    @property
    def specs(self) -> list[Message]:
        return self.ctx.specs

    def wants(self, scenario: int) -> bool:
        return self.ctx.wants(scenario)

    async def run(self) -> int:
        """Every phase the chosen scenarios need, then the results; the exit status (0: all ran and were correct)."""
        started = time.monotonic()
        print(self._header(), file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(self.s.timeout):
                if self.s.agents == "go":
                    self.go_agents = await build_go_agents(self.tmp)
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
            await self.ctx.stop_all()
            if not self.s.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
        results.write(self.s, self.out, time.monotonic() - started)
        return results.summary(self.s, self.out)

    async def _guarded(self, name: str, phase: Callable[[], Awaitable[None]]) -> None:
        """Run one phase; a failure is reported and the next phase still runs (its processes are stopped)."""
        try:
            await phase()
        except Exception as error:
            self.out.errors.append(f"{name}: {type(error).__name__}: {error}")
            self.progress.done(f"{name} phase FAILED: {error}")
        finally:
            await self.ctx.stop_all()

    def _server_workers(self) -> tuple[str, ...]:
        return ("--workers", str(self.s.server_workers)) if self.s.server_workers else ()

    def _agents(self) -> str:
        return "one Go agent process" if self.s.agents == "go" else f"{self.s.workers} Python agent processes"

    def _header(self) -> str:
        s = self.s
        return (
            f"epsync bench: {s.nodes:,} node watchers x {s.per_node} endpoints = {s.shape.endpoints:,} endpoints, "
            f"{s.selectors} selector watchers, {self._agents()}, epsync serve --workers "
            f"{s.server_workers or 'default'}; scenarios "
            f"{','.join(map(str, s.scenarios))}; results in {s.out}"
        )

    # --- the phases: one system each ------------------------------------------------------------

    async def epsync_phase(self) -> None:
        server = EpsyncProcess(self.tmp / "epsync-data", self.tmp / "epsync-server.log", self._server_workers())
        self.ctx.later(server.stop)
        await server.start()
        sampler = self.ctx.sample(server.pid, rss_series="epsync")
        writer = await self.start_writer("epsync", server.target)
        self.out.add("load", await self._load("epsync", writer, sampler))
        fleet, row = await self.synced_fleet("epsync", server.target, self.specs, sampler)
        seconds = row["seconds"]
        self.progress.done(f"epsync: {len(self.specs):,} watchers in sync in {seconds:.1f} s")
        store = lambda: s6_correctness.epsync_store(server.target)  # noqa: E731
        system = System("epsync", fleet, sampler, _paced(writer), store, writer, server)
        if self.wants(1):
            await s1_churn.run(self.ctx, system)
        if self.wants(2):
            await s2_storms.run(self.ctx, system)
        if self.wants(4):
            await s4_etcd.on_epsync(self.ctx, system)
        if self.wants(3):
            await s3_slow_watchers.run(self.ctx, system)

    async def etcd_phase(self) -> None:
        server = EtcdProcess(etcd_binary(self.s.etcd_binary), self.tmp / "etcd-data", self.tmp / "etcd.log")
        self.ctx.later(server.stop)
        await server.start()
        sampler = self.ctx.sample(server.pid, rss_series="etcd")
        writer = await self.start_writer("etcd", server.target)
        self.out.add("load", await self._load("etcd", writer, sampler))
        specs = self.ctx.node_specs
        fleet, row = await self.synced_fleet("etcd", server.target, specs, sampler)
        seconds = row["seconds"]
        self.progress.done(f"etcd: {len(specs):,} node watchers in sync in {seconds:.1f} s")
        store = lambda: s6_correctness.etcd_store(server.target)  # noqa: E731
        await s4_etcd.on_etcd(self.ctx, System("etcd", fleet, sampler, _paced(writer), store, writer, server))

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
        self.ctx.later(raw.stop)
        await raw.call("prepare", within=600)
        sampler = self.ctx.sample(raw.pid)
        fleet, seconds = await self.start_fleet("raw", f"127.0.0.1:{port}", self.specs)
        self.progress.done(f"scenario 5: raw gRPC server, {len(self.specs):,} watchers connected in {seconds:.1f} s")

        async def store() -> s6_correctness.Store:
            reply = await raw.call("store", within=120)
            return {key: (node, version) for key, (node, version) in reply["store"].items()}

        await s5_raw.run(self.ctx, System("raw", fleet, sampler, _paced(raw), store))

    async def cluster_phase(self) -> None:
        s = self.s
        etcd = EtcdProcess(etcd_binary(s.etcd_binary), self.tmp / "cluster-etcd-data", self.tmp / "cluster-etcd.log")
        self.ctx.later(etcd.stop)
        await etcd.start()
        datastore = ("--datastore", "etcd", "--etcd-endpoints", etcd.target, "--etcd-prefix", "/epsync/v1/")
        replicas: list[EpsyncProcess] = []
        for i in range(s.replicas):
            replica = EpsyncProcess(
                self.tmp / f"replica-{i}", self.tmp / f"replica-{i}.log", (*datastore, *self._server_workers())
            )
            self.ctx.later(replica.stop)
            await replica.start()
            replicas.append(replica)
        name = s.cluster_system
        # The cluster's cost is all of it: every replica and the etcd behind them.
        sampler = self.ctx.sample(etcd.pid, tuple(replica.pid for replica in replicas), rss_series=name)
        targets = ",".join(replica.target for replica in replicas)  # agents and write streams take turns
        writer = await self.start_writer("epsync", targets)
        self.out.add("load", await self._load(name, writer, sampler))
        fleet, seconds = await self.start_fleet("epsync", targets, self.specs)
        what = f"initial sync of {len(self.specs):,} watchers over {s.replicas} replicas"
        self.out.add("load", {"system": name, "what": what, "seconds": seconds})
        self.progress.done(f"{name}: {len(self.specs):,} watchers in sync in {seconds:.1f} s")
        # Each replica's views against one replica's store: the writes end before the check.
        store = lambda: s6_correctness.epsync_store(replicas[-1].target)  # noqa: E731
        await s7_cluster.run(self.ctx, System(name, fleet, sampler, _paced(writer), store, writer))

    # --- the load generators --------------------------------------------------------------------

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
        self.ctx.later(writer.stop)
        await writer.call("prepare", within=600)
        return writer

    async def start_fleet(self, mode: str, target: str, specs: Sequence[Message]) -> tuple[Fleet, float]:
        fleet = Fleet(mode, target, self.s.workers, self.tmp, self.go_agents)
        self.ctx.later(fleet.stop)
        started = time.monotonic()
        async with self.progress.ticking(f"{mode}: {len(specs):,} watchers syncing", 0, lambda: ""):
            await fleet.start(specs, within=self.s.sync_timeout)
        return fleet, time.monotonic() - started

    async def synced_fleet(
        self, system: str, target: str, specs: Sequence[Message], sampler: Sampler
    ) -> tuple[Fleet, dict[str, Any]]:
        """The watchers started and in sync; a "load" row with the time it took and the server memory
        they cost (RSS a second after all are in sync, less RSS before they connect, per watcher)."""
        await asyncio.sleep(1.0)
        rss_before = sampler.rss_mb_now()
        fleet, seconds = await self.start_fleet(system, target, specs)
        await asyncio.sleep(1.0)
        rss_after = sampler.rss_mb_now()
        row = {
            "system": system,
            "what": f"initial sync of {len(specs):,} watchers",
            "seconds": seconds,
            "server_peak_rss_mb": sampler.window(time.time() - seconds - 2, time.time())["peak_rss_mb"],
            "rss_before_mb": rss_before,
            "rss_after_mb": rss_after,
            "rss_per_watcher_kib": (rss_after - rss_before) * 1024 / max(1, len(specs)),
        }
        self.out.add("load", row)
        return fleet, row

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


def _paced(child: Child) -> Callable[[float, float], Awaitable[Message]]:
    """Offer `rate` writes/s for `duration` s through a writer (or the raw server, which writes itself)."""

    def drive(rate: float, duration: float) -> Awaitable[Message]:
        return child.call("run", rate=rate, duration=duration, within=duration + 120)

    return drive


def procstat_rss(sampler: Sampler) -> str:
    if not sampler.samples:
        return ""
    return f"RSS {sampler.samples[-1][2] / MiB:,.0f} MiB"


def main(args: argparse.Namespace) -> int:
    """Run the load test with parsed arguments; the exit status (0: every scenario ran and was correct)."""
    return asyncio.run(Bench(settings_from(args)).run())


def standalone() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.split("\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))


if __name__ == "__main__":
    standalone()
