"""Where every benchmark's figures go: a table on stdout, `<name>.json` and PNG plots in bench/results/.

A benchmark hands over its rows (one dict per measured point) once; this prints them as a table,
writes `<name>.json` with the run's parameters and the machine beside them, and plots columns
against each other, so every published figure can be traced back to the run that made it. Extra
row sets (time series) go into the same JSON under "series" and can have plots of their own,
`<name>-<suffix>.png`. Plots need matplotlib (requirements/bench.in); without it the JSON is
still written and the plots are skipped with a note.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Plot:
    """One line per `series` value (or a single line), `y` against `x`."""

    x: str
    y: str
    title: str
    series: str | None = None
    log_x: bool = False
    log_y: bool = False
    # For extra plots: which "series" row set to draw, and the file suffix.
    data: str = ""
    suffix: str = ""
    # A horizontal line (e.g. the 100 ms p99 budget), drawn dashed when set.
    threshold: float | None = None
    style: str = "o-"


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as meminfo:
            info["memory_gib"] = round(int(meminfo.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def print_table(rows: Sequence[Row], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(_cell(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row.get(c, "")).rjust(widths[c]) for c in columns), flush=True)


def write(
    name: str,
    parameters: Mapping[str, Any],
    rows: Sequence[Row],
    plot: Plot | None,
    out: Path = RESULTS,
    *,
    series: Mapping[str, Sequence[Row]] | None = None,
    plots: Sequence[Plot] = (),
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `<out>/<name>.json` and its plots; return the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    document: dict[str, Any] = {
        "benchmark": name,
        "machine": machine(),
        "parameters": dict(parameters),
        "results": [dict(r) for r in rows],
    }
    if extra:
        document.update(extra)
    if series:
        document["series"] = {key: [dict(r) for r in value] for key, value in series.items()}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    drawn = []
    if plot is not None and rows:
        drawn.append((out / f"{name}.png", rows, plot))
    for extra_plot in plots:
        data = (series or {}).get(extra_plot.data, [])
        if data:
            drawn.append((out / f"{name}-{extra_plot.suffix}.png", data, extra_plot))
    if drawn:
        try:
            for png, data_rows, each in drawn:
                _plot(png, data_rows, each)
        except ImportError:
            print(f"matplotlib is not installed: {name} plots skipped", file=sys.stderr)
    print(f"wrote {path}")
    return path


def _plot(path: Path, rows: Sequence[Row], plot: Plot) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[Row]] = {}
    for row in rows:
        if row.get(plot.x) is None or row.get(plot.y) is None:
            continue
        groups.setdefault(str(row[plot.series]) if plot.series else plot.y, []).append(row)
    for label, unsorted in groups.items():
        members = sorted(unsorted, key=lambda r: r[plot.x])
        axes.plot([r[plot.x] for r in members], [r[plot.y] for r in members], plot.style, label=label, markersize=4)
    if plot.threshold is not None:
        axes.axhline(plot.threshold, linestyle="--", color="grey", linewidth=1)
    if plot.log_x:
        axes.set_xscale("log")
    if plot.log_y:
        axes.set_yscale("log")
    axes.set_xlabel(plot.x)
    axes.set_ylabel(plot.y)
    axes.set_title(plot.title)
    axes.grid(visible=True, alpha=0.3)
    if plot.series:
        axes.legend(title=plot.series)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)
