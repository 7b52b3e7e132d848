"""Where every benchmark's figures go: a table on stdout, JSON and a plot under bench/results/.

The implementation ships with the package (`bench.loadtest.report`, which `epsync bench` uses from
an installed epsync too); this module keeps the benchmarks' default output directory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.loadtest.report import Plot, Row, machine, print_table
from bench.loadtest.report import write as _write

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "Plot", "Row", "machine", "print_table", "write"]


def write(
    name: str, parameters: Mapping[str, Any], rows: Sequence[Row], plot: Plot | None, out: Path = RESULTS
) -> Path:
    """Write `<out>/<name>.json` (and `.png` when there is a plot); return the JSON path."""
    return _write(name, parameters, rows, plot, out)
