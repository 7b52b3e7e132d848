"""What one watcher's resume costs the server: `EndpointIndex.replay` as the log of changes grows.

A reconnect storm after writes (the load test's storm (b)) has every node watcher resume from the
revision it held: the server replays, per watcher, the logged changes after it that concern the
watcher's group. This builds the scale test's shape (10,000 nodes x 50 endpoints), logs N random
endpoint changes, and times the replay of every change for a sample of node groups two ways, which
deliver the same events:

- `node`: a node watcher (`node: node-N`), which the log's per-node positions serve;
- `selector`: the same endpoints selected by a label only they carry (`host == 'node-N'`), for which
  the replay visits every logged change (what a node watcher cost before the per-node positions).

    .venv/bin/python -m bench.bench_replay
    .venv/bin/python -m bench.bench_replay --changes 1000 100000 --sample 200
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench import report
from epsync._core import EndpointIndex, Selector


def measure(args: argparse.Namespace) -> list[report.Row]:
    rng = random.Random(args.seed)
    rows: list[report.Row] = []
    for changes in args.changes:
        index = EndpointIndex()
        no_profiles: list[str] = []
        index.upsert_endpoints(
            [
                ("ns", f"n{n}-e{e}", f"node-{n}", {"host": f"node-{n}", "app": f"a{e % 5}"}, no_profiles, 1)
                for n in range(args.nodes)
                for e in range(args.per_node)
            ]
        )
        sample = rng.sample(range(args.nodes), args.sample)
        node_groups = [index.add_group("", f"node-{n}", None) for n in sample]
        selector_groups = [index.add_group("", "", Selector(f"host == 'node-{n}'")) for n in sample]
        index.reset_log(1)
        for revision in range(2, changes + 2):
            n, e = rng.randrange(args.nodes), rng.randrange(args.per_node)
            labels = {"host": f"node-{n}", "app": "changed", "change": str(revision)}
            index.apply([(revision, "ns", f"n{n}-e{e}", f"node-{n}", labels, [])], [])
        for kind, groups in (("node", node_groups), ("selector", selector_groups)):
            timings: list[float] = []
            events = 0
            for group in groups:
                started = time.perf_counter()
                replayed = index.replay(group, 1, 0)
                timings.append(time.perf_counter() - started)
                assert replayed is not None
                events += len(replayed)
            rows.append(
                {
                    "logged_changes": changes,
                    "watcher": kind,
                    "median_us": statistics.median(timings) * 1e6,
                    "max_us": max(timings) * 1e6,
                    "events_per_replay": events / len(groups),
                }
            )
            print(", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, nargs="+", default=[1_000, 5_000, 20_000, 100_000])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--per-node", type=int, default=50)
    parser.add_argument("--sample", type=int, default=500, help="node watchers timed (and as many selector ones)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    rows = measure(args)
    report.print_table(rows, ["logged_changes", "watcher", "median_us", "max_us", "events_per_replay"])
    plot = report.Plot(
        x="logged_changes", y="median_us", series="watcher", title="One watcher's replay (µs)", log_x=True, log_y=True
    )
    parameters = {k: v for k, v in vars(args).items() if k != "out"}
    report.write("replay", parameters, rows, plot, args.out)


if __name__ == "__main__":
    main()
