"""What a run measured (`Outcome`) and how it is written: JSON and plots per scenario, the summary tables.

Every scenario adds its rows and time series to the run's `Outcome`; at the end `write` leaves
`scenario1.json` ... `scenario7.json` and `summary.json` with their plots in the results directory
(through `bench.report`), and `summary` prints a table per scenario, the ratios against the targets
and scenario 6's checks, and returns the run's exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import report
from bench.loadtest.options import Settings
from bench.loadtest.scenarios.s6_correctness import CheckResult
from bench.loadtest.sut import Sampler

MiB = 1 << 20

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
    "server_cpu_us_per_write",
    "server_cpu_us_per_event",
    "server_peak_rss_mb",
    "writer_cpu",
    "agents_cpu",
    "held",
]


@dataclass
class Outcome:
    """Everything measured, by scenario: rows for the tables and JSON, series for the plots."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    series: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    held_rate: dict[str, float] = field(default_factory=dict)  # "scenario/system" -> highest rate held
    samplers: dict[str, list[Sampler]] = field(default_factory=dict)  # per system, in order (a restart adds one)

    def add(self, scenario: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(scenario, []).append(row)

    def add_series(self, scenario: str, name: str, rows: Sequence[dict[str, Any]]) -> None:
        self.series.setdefault(scenario, {}).setdefault(name, []).extend(rows)


def rss_series(o: Outcome) -> list[dict[str, Any]]:
    """Each server's RSS over its phase of the run, one point a second, from the phase's start."""
    rows: list[dict[str, Any]] = []
    for system, samplers in o.samplers.items():
        samples = [sample for sampler in samplers for sample in sampler.samples]
        if samples:
            t0 = samples[0][0]
            rows += [{"seconds": t - t0, "rss_mb": rss / MiB, "server": system} for t, _, rss in samples[::4]]
    return rows


def comparisons(s: Settings, o: Outcome) -> list[dict[str, Any]]:
    """Scenario 4's epsync/etcd ratios, and scenario 5's share of the raw ceiling, against the targets."""
    rows: list[dict[str, Any]] = []
    out = o.rows

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
        rows.append({"metric": metric, "epsync": epsync, against: other, "ratio": ratio, "target": target, "met": met})

    e_held = o.held_rate.get("scenario4/epsync")
    k_held = o.held_rate.get("scenario4/etcd")
    if e_held is not None or k_held is not None:
        add("highest write rate held, p99 < budget (writes/s)", e_held, k_held, ">= 1.5", lambda r: r >= 1.5)
    rate = s.compare_rate
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
        add(
            f"server CPU per write at {rate:,.0f} writes/s (us)",
            _get(e_at, "server_cpu_us_per_write"),
            _get(k_at, "server_cpu_us_per_write"),
            "<= 1",
            lambda r: r <= 1,
        )
        add(
            f"server CPU per delivered event at {rate:,.0f} writes/s (us)",
            _get(e_at, "server_cpu_us_per_event"),
            _get(k_at, "server_cpu_us_per_event"),
        )
    # At the comparison rate and at 1,000 writes/s, the rate the CPU-per-write target was first set at.
    for at_rate in sorted({rate, 1000.0}):
        e_row, k_row = at("scenario4", "epsync", at_rate), at("scenario4", "etcd", at_rate)
        if at_rate != rate and (e_row or k_row):
            add(
                f"server CPU per write at {at_rate:,.0f} writes/s (us)",
                _get(e_row, "server_cpu_us_per_write"),
                _get(k_row, "server_cpu_us_per_write"),
                "<= 1",
                lambda r: r <= 1,
            )
        # Each of epsync's threads against all of etcd's CPU per write: how far a thread's share alone
        # goes towards etcd's whole cost (what bounds the CPU-per-write target; README "Performance").
        for thread, us in (e_row or {}).get("server_cpu_us_per_write_by_thread", {}).items():
            add(
                f"  epsync thread {thread}, CPU per write at {at_rate:,.0f} writes/s (us)",
                us,
                _get(k_row, "server_cpu_us_per_write"),
            )
    e_rss = max((r["server_peak_rss_mb"] for r in out.get("scenario4", []) if r["system"] == "epsync"), default=None)
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
    e_sync = next((r for r in out.get("load", []) if r["system"] == "epsync" and "rss_per_watcher_kib" in r), None)
    k_sync = next((r for r in out.get("load", []) if r["system"] == "etcd" and "rss_per_watcher_kib" in r), None)
    if e_sync and k_sync:
        add("server RSS per connected watcher (KiB)", e_sync["rss_per_watcher_kib"], k_sync["rss_per_watcher_kib"])
    for storm in ("a", "b", "c"):
        e = next((r for r in out.get("scenario2", []) if r["system"] == "epsync" and r["storm"] == storm), None)
        k = next((r for r in out.get("scenario2", []) if r["system"] == "etcd" and r["storm"] == storm), None)
        if e or k:
            # Storm (a)'s time and bytes have targets; the others are for reading alongside.
            for what, column, bound in (
                ("time until all in sync (s)", "all_in_sync_s", 0.1),
                ("bytes received", "bytes_received", 0.05),
                ("server CPU per reconnect (ms)", "server_cpu_ms_per_reconnect", None),
                ("agents' CPU per reconnect (ms)", "agents_cpu_ms_per_reconnect", None),
                ("server peak RSS (MiB)", "server_peak_rss_mb", None),
            ):
                target = bound if storm == "a" else None
                add(
                    f"storm ({storm}): {what}",
                    _get(e, column),
                    _get(k, column),
                    "" if target is None else f"<= {target}",
                    None if target is None else _at_most(target),
                )
    cluster = s.cluster_system
    c_held, q_held = o.held_rate.get(f"scenario7/{cluster}"), o.held_rate.get("scenario1/epsync")
    if c_held is not None:
        add(f"{cluster}: highest write rate held (writes/s)", c_held, q_held, against="sqlite")
        c_at, q_at = at("scenario7", cluster, rate), at("scenario1", "epsync", rate)
        for what, column in (("p99", "p99_ms"), ("p50", "p50_ms"), ("servers' CPU", "server_cpu")):
            unit = "cores" if column == "server_cpu" else "ms"
            add(
                f"{cluster}: {what} at {rate:,.0f} writes/s ({unit})",
                _get(c_at, column),
                _get(q_at, column),
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


def write(s: Settings, o: Outcome, seconds: float) -> None:
    """Every scenario's JSON and plots, and the summary's, in `s.out`."""
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()}
    parameters["endpoints"] = s.shape.endpoints
    parameters["run_seconds"] = round(seconds, 1)
    out = s.out
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
    memory_plot = report.Plot(
        x="seconds",
        y="rss_mb",
        series="server",
        title="Server RSS over the run",
        data="rss",
        suffix="memory",
        style="-",
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
        memory = replace(memory_plot, title="Scenario 3: server RSS")
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
    if o.checks or 6 in s.scenarios:
        report.write(
            "scenario6",
            parameters,
            [c.row() for c in o.checks],
            None,
            out,
            extra={"differences": {f"{c.scenario}/{c.system}": c.differences for c in o.checks}},
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
    throughput_plot = replace(against_rate, title="Delivered events/s against offered write rate", suffix="throughput")
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
        comparisons(s, o),
        None,
        out,
        series={"rss": rss_series(o), "load": o.rows.get("load", []), "throughput": throughput_rows},
        plots=[memory_plot, throughput_plot, achieved_plot, p99_plot],
        extra={"errors": o.errors},
    )


def summary(s: Settings, o: Outcome) -> int:
    """Print a table per scenario, the ratios and the checks; the exit status (0: all ran and were correct)."""
    print()
    tables = (
        (
            "load",
            "Loading and initial sync",
            ["system", "what", "seconds", "writes_per_s", "peak_rss_mb", "server_peak_rss_mb", "rss_per_watcher_kib"],
        ),
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
                "server_cpu_ms_per_reconnect",
                "agents_cpu_s",
                "agents_cpu_ms_per_reconnect",
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
            f"Scenario 7: steady churn on {s.cluster_system} (server figures: replicas + etcd)",
            SWEEP_COLUMNS,
        ),
    )
    for key, title, columns in tables:
        if o.rows.get(key):
            print(f"\n{title}")
            report.print_table(o.rows[key], columns)
    ratios = comparisons(s, o)
    if ratios:
        print("\nRatios (epsync / etcd, epsync / raw ceiling, cluster / embedded store), against the targets")
        report.print_table(ratios, ["metric", "epsync", "etcd", "raw", "sqlite", "ratio", "target", "met"])
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


def _at_most(bound: float) -> Callable[[float], bool]:
    return lambda ratio: ratio <= bound


def _get(row: dict[str, Any] | None, key: str) -> float | None:
    return None if row is None else float(row[key])
