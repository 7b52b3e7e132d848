"""Where every benchmark's figures go: a table on stdout, JSON and a plot under bench/results/.

A benchmark hands over its rows (one dict per measured point) once; this module prints them as
a table, writes `<name>.json` with the run's parameters beside them, and plots one column against
another to `<name>.png`, so every published figure can be traced back to the run that made it.
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

RESULTS = Path(__file__).resolve().parent / "results"

Row = Mapping[str, float | int | str]


@dataclass(frozen=True, slots=True)
class Plot:
    """One line per `series` value (or a single line), `y` against `x`."""

    x: str
    y: str
    title: str
    series: str | None = None
    log_x: bool = False
    log_y: bool = False


def machine() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}


def print_table(rows: Sequence[Row], columns: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(_cell(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row.get(c, "")).rjust(widths[c]) for c in columns), flush=True)


def write(
    name: str, parameters: Mapping[str, Any], rows: Sequence[Row], plot: Plot | None, out: Path = RESULTS
) -> Path:
    """Write `<out>/<name>.json` (and `.png` when there is a plot); return the JSON path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    document = {"benchmark": name, "machine": machine(), "parameters": dict(parameters), "results": list(rows)}
    path.write_text(json.dumps(document, indent=2) + "\n")
    if plot is not None and rows:
        _plot(out / f"{name}.png", rows, plot)
    print(f"wrote {path}")
    return path


def _plot(path: Path, rows: Sequence[Row], plot: Plot) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(str(row[plot.series]) if plot.series else plot.y, []).append(row)
    for label, unsorted in groups.items():
        members = sorted(unsorted, key=lambda r: r[plot.x])
        axes.plot([r[plot.x] for r in members], [r[plot.y] for r in members], marker="o", label=label)
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
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
