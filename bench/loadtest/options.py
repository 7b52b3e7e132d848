"""The sizes and durations of a load-test run, and its command-line flags (`python -m bench.loadtest --help`)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import RESULTS

if TYPE_CHECKING:
    from bench.population import Shape

MiB = 1 << 20
ALL_SCENARIOS = (1, 2, 3, 4, 5, 6, 7)


@dataclass(frozen=True)
class Settings:
    """Every size and duration of a run (its flags)."""

    nodes: int = 2000
    per_node: int = 50
    selectors: int = 200
    namespaces: int = 100
    agents: str = "go"  # "go": one Go agent process (bench/agents); "python": `workers` Python processes
    workers: int = 4
    server_workers: int = 0  # `epsync serve --workers` of every epsync server; 0: the server's default
    replicas: int = 2
    writer_streams: int = 4
    writer_window: int = 1000
    rates: tuple[float, ...] = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
    compare_rate: float = 2000
    raw_rates: tuple[float, ...] = (1000, 2000, 4000, 8000, 12000, 16000)
    step_seconds: float = 10.0
    warmup_seconds: float = 3.0
    p99_budget_ms: float = 100.0
    storm_change_fraction: float = 0.01
    stall_fraction: float = 0.10
    stall_seconds: float = 20.0
    stall_rate: float = 0.0  # 0: the highest rate scenario 1 held (or the lowest swept)
    slow_max_events: int = 100
    slow_max_bytes: int = 1 * MiB
    stall_window_bytes: int = 16 * 1024
    # Scenario 3: times every endpoint of the stalled nodes is rewritten during the stall. Enough
    # for the backlog to pass --slow-max-events even after what the stalled client absorbs: about
    # a hundred events at full size for a Python agent, about 170 for a Go one (gRPC-Go's 64 KiB
    # floor on HTTP/2 windows, and the View's buffer of 64 events).
    stall_rollout_rounds: int = 8
    scenarios: tuple[int, ...] = ALL_SCENARIOS
    out: Path = Path("bench/results")
    timeout: float = 900.0
    sync_timeout: float = 300.0
    etcd_binary: str | None = None
    seed: int = 1
    keep: bool = False
    smoke: bool = False
    scale: bool = False

    @property
    def shape(self) -> Shape:
        from bench.population import Shape

        return Shape(self.nodes, self.per_node, namespaces=self.namespaces, seed=self.seed)

    @property
    def cluster_system(self) -> str:
        """Scenario 7's system, as its rows name it."""
        return f"epsync x{self.replicas} on etcd"


# Seconds a smoke run may take before it stops itself (`--smoke`; `--timeout` overrides it).
SMOKE_TIMEOUT = 240.0
SMOKE: dict[str, Any] = {
    "nodes": 20,
    "per_node": 5,
    "selectors": 10,
    "namespaces": 5,
    "workers": 2,
    "writer_streams": 2,
    "rates": (50.0, 100.0),
    "compare_rate": 100.0,
    "raw_rates": (100.0, 200.0),
    "step_seconds": 1.5,
    "warmup_seconds": 0.5,
    "stall_seconds": 2.0,
    "stall_rate": 200.0,
    "slow_max_events": 5,
    "slow_max_bytes": 8192,
    "stall_window_bytes": 2048,
    "stall_rollout_rounds": 40,
    "timeout": SMOKE_TIMEOUT,
    "sync_timeout": 60.0,
    "p99_budget_ms": 1000.0,
}


# `--scale` (`make bench-scale`): what the Python agents could not hold. Ten thousand node agents on
# their own connections over 500,000 endpoints, no selector watchers (etcd has none): their initial
# sync and the server memory per watcher, scenario 2's storms, and scenario 4's churn on both systems.
SCALE_TIMEOUT = 1200.0
SCALE: dict[str, Any] = {
    "nodes": 10_000,
    "per_node": 50,
    "selectors": 0,
    "namespaces": 500,
    "scenarios": (2, 4),
    "rates": (500.0, 1000.0, 2000.0),
    "compare_rate": 1000.0,
    "step_seconds": 8.0,
    "timeout": SCALE_TIMEOUT,
    "sync_timeout": 600.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load test's flags; every size of every scenario has one."""
    d = Settings()
    add = parser.add_argument
    add("--nodes", type=int, default=d.nodes, help="node watchers N, one node each (default %(default)s)")
    add(
        "--endpoints-per-node", dest="per_node", type=int, default=d.per_node, help="endpoints E per node (%(default)s)"
    )
    add(
        "--selector-watchers", dest="selectors", type=int, default=d.selectors, help="selector watchers S (%(default)s)"
    )
    add("--namespaces", type=int, default=d.namespaces, help="namespaces the endpoints spread over (%(default)s)")
    add(
        "--agents",
        choices=["go", "python"],
        default=d.agents,
        help="the watcher agents: one Go process (bench/agents, the default) or --workers Python processes",
    )
    add("--workers", type=int, default=d.workers, help="Python agent processes, with --agents python (%(default)s)")
    add(
        "--server-workers",
        dest="server_workers",
        type=int,
        default=d.server_workers,
        help="epsync serve --workers of every epsync server (0, the default: the server's own, one per two cores)",
    )
    add("--replicas", type=int, default=d.replicas, help="scenario 7: epsync replicas on one etcd (%(default)s)")
    add("--writer-streams", type=int, default=d.writer_streams, help="write streams of the epsync writer (%(default)s)")
    add("--writer-window", type=int, default=d.writer_window, help="writes in flight at most (%(default)s)")
    add("--rates", type=_floats, default=d.rates, help="write rates to sweep, comma-separated (writes/s)")
    add("--compare-rate", type=float, default=d.compare_rate, help="a rate always measured, for ratios (%(default)s)")
    add("--raw-rates", type=_floats, default=d.raw_rates, help="event rates the raw gRPC server sweeps")
    add("--step-seconds", type=float, default=d.step_seconds, help="measured seconds per rate (%(default)s)")
    add("--warmup-seconds", type=float, default=d.warmup_seconds, help="unmeasured seconds before each step")
    add("--p99-budget-ms", type=float, default=d.p99_budget_ms, help="p99 a rate must stay under (%(default)s)")
    add("--storm-change-fraction", type=float, default=d.storm_change_fraction, help="storm (b): share changed")
    add("--stall-fraction", type=float, default=d.stall_fraction, help="scenario 3: share of watchers that stall")
    add("--stall-seconds", type=float, default=d.stall_seconds, help="scenario 3: how long they stall")
    add("--stall-rate", type=float, default=d.stall_rate, help="scenario 3 write rate (0: highest held rate)")
    add("--slow-max-events", type=int, default=d.slow_max_events, help="scenario 3 server --watcher-max-events")
    add("--slow-max-bytes", type=int, default=d.slow_max_bytes, help="scenario 3 server --watcher-max-bytes")
    add(
        "--stall-window-bytes",
        type=int,
        default=d.stall_window_bytes,
        help="HTTP/2 window of the watchers that stall (so a stall reaches the server quickly)",
    )
    add(
        "--stall-rollout-rounds",
        type=int,
        default=d.stall_rollout_rounds,
        help="scenario 3: rewrites of every endpoint of the stalled nodes during the stall",
    )
    add("--scenarios", type=_ints, default=d.scenarios, help="scenarios to run, e.g. 1,2,6 (default: all)")
    add("--out", type=Path, default=None, help="results directory (default bench/results)")
    timeouts = f"{d.timeout:.0f}; smoke {SMOKE_TIMEOUT:.0f}; scale {SCALE_TIMEOUT:.0f}"
    add("--timeout", type=float, default=None, help=f"seconds the whole run may take ({timeouts})")
    add("--sync-timeout", type=float, default=d.sync_timeout, help="seconds watchers may take to get in sync")
    add("--etcd-binary", default=None, help="etcd to run (default .tools/bin/etcd, else PATH)")
    add("--seed", type=int, default=d.seed, help="population seed (%(default)s)")
    add("--keep", action="store_true", help="keep the temporary directory (data, logs)")
    add("--smoke", action="store_true", help="tiny sizes and short steps: every scenario in seconds")
    add(
        "--scale",
        action="store_true",
        help="10,000 node watchers over 500,000 endpoints: sync, memory per watcher, storms, churn (make bench-scale)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    values = {name: getattr(args, name) for name in Settings.__dataclass_fields__ if hasattr(args, name)}
    explicit_timeout, explicit_out = values.pop("timeout"), values.pop("out")
    settings = Settings(**values)
    for preset, wanted in ((SMOKE, settings.smoke), (SCALE, settings.scale)):
        if wanted:
            defaults = Settings()
            # A preset's sizes replace the defaults, never a size given on the command line.
            chosen = {k: v for k, v in preset.items() if getattr(settings, k) == getattr(defaults, k)}
            settings = replace(settings, **chosen)
    if explicit_timeout is not None:
        settings = replace(settings, timeout=explicit_timeout)
    # Relative to the working directory, so that a run from the repository records `bench/results`.
    default_out = RESULTS / "scale" if settings.scale else RESULTS
    return replace(settings, out=explicit_out or Path(os.path.relpath(default_out)))


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not set(values) <= set(ALL_SCENARIOS):
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(map(str, ALL_SCENARIOS))}")
    return values
