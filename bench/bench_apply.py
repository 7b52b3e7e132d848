"""Time the label index's apply of one committed endpoint change, as the cache hands it over (stored bytes).

`EndpointIndex.apply_stored` is what every committed batch costs the cache in the Rust core: it reads each
change's node, labels and profiles from the stored bytes, interns them, updates the index, plans the
watchers' events and encodes them. Here: the load test's cluster (`bench.population`, 100,000 endpoints by
default) with a node watcher group for every node, and batches of one change, timed one by one:

- `rewrite`: the endpoint written again with a new `spec.containerID`, as the load test's writer does
  (labels, node and profiles unchanged);
- `relabel`: one of its labels changed as well.

`--baseline DIR` runs the same measurement with another checkout's build (its `.venv`, e.g. a git worktree of
an older commit) in a subprocess, one after the other, and prints both:

    .venv/bin/python -m bench.bench_apply --baseline ../older-worktree
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.population import Shape, endpoint, node_name
from epsync._core import EndpointIndex, normalize_endpoints

_REPOSITORY = Path(__file__).resolve().parent.parent


def _stored(request: bytes) -> bytes:
    """An endpoint as the server stores it (validated, with its uid, creation time and the two labels it adds)."""
    (stored,) = normalize_endpoints([(request, "0f2c5d9e-uid", (1_700_000_000, 0))])
    assert isinstance(stored, bytes), stored
    return stored


def measure(endpoints: int, changes: int, seed: int) -> list[report.Row]:
    shape = Shape(nodes=endpoints // 50, per_node=50, namespaces=200)
    objects = [endpoint(j, shape) for j in range(shape.endpoints)]
    stored = [_stored(o.SerializeToString()) for o in objects]
    index = EndpointIndex()
    index.load_stored([(o.metadata.namespace, o.metadata.name, 1, s) for o, s in zip(objects, stored, strict=True)], [])
    index.reset_log(1)
    for node in range(shape.nodes):
        index.add_group("", node_name(node), None)
    rng = random.Random(seed)
    revision = 1
    rows: list[report.Row] = []
    for mode in ("rewrite", "relabel"):
        samples: list[int] = []
        events = 0
        for generation in range(1, changes + 1):
            j = rng.randrange(shape.endpoints)
            changed = endpoint(j, shape, generation=revision + generation)
            if mode == "relabel":
                changed.metadata.labels["generation"] = str(generation)
            new = _stored(changed.SerializeToString())
            revision += 1
            change = (revision, changed.metadata.namespace, changed.metadata.name, new, stored[j], 1)
            started = time.perf_counter_ns()
            _, count = index.apply_stored([change], [])
            samples.append(time.perf_counter_ns() - started)
            events += count
            stored[j] = new
            if generation % 1000 == 0:
                index.trim_log(revision)
        assert events == changes, "every change is one event for its node's group"
        samples.sort()
        rows.append(
            {
                "mode": mode,
                "changes": changes,
                "median_us": statistics.median(samples) / 1000,
                "p99_us": samples[int(len(samples) * 0.99)] / 1000,
                "endpoints": shape.endpoints,
                "groups": shape.nodes,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=20_000, help="timed changes per mode")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--baseline", type=Path, help="another checkout with its .venv built, measured the same way after this one"
    )
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)  # the baseline's subprocess
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    rows = [{"build": "this", **row} for row in measure(args.endpoints, args.changes, args.seed)]
    if args.rows_only:
        json.dump(rows, sys.stdout)
        return
    if args.baseline is not None:
        # This file, run by the baseline's interpreter: `epsync` is the baseline's build, `bench` this checkout's.
        command = [str(args.baseline / ".venv" / "bin" / "python"), __file__, "--rows-only"]
        command += ["--endpoints", str(args.endpoints), "--changes", str(args.changes), "--seed", str(args.seed)]
        output = subprocess.run(
            command, check=True, capture_output=True, text=True, env={"PYTHONPATH": str(_REPOSITORY)}
        ).stdout
        rows += [{**row, "build": "baseline"} for row in json.loads(output)]
    print(f"EndpointIndex.apply_stored, one change a batch, {args.endpoints:,} endpoints, µs")
    report.print_table(rows, ["build", "mode", "changes", "median_us", "p99_us", "groups"])
    parameters = {"endpoints": args.endpoints, "changes": args.changes, "seed": args.seed}
    parameters["baseline"] = "given" if args.baseline else None
    plot = report.Plot(x="mode", y="median_us", series="build", title="apply_stored, one change (µs, median)")
    report.write("apply", parameters, rows, plot, args.out)


if __name__ == "__main__":
    main()
