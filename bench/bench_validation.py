"""Time the validation and normalisation of a write: the Python reference against the Rust batch call.

What a create costs before it reaches the store: check every rule of SPEC §3, normalise, set the uid and
creation timestamp, and encode the stored bytes. Python does it as the server does today, on a message in
hand: `normalize_workload_endpoint`, the two server-owned fields, `WORKLOAD_ENDPOINTS.encode`. Rust does it
with `epsync._core.normalize_endpoints` on the request's bytes, in batches of 1, 100 and 1,000; its time
includes decoding those bytes. One more row prices a server that holds messages, not bytes: the Rust call
of one plus the `SerializeToString()` that gives it its input.

The endpoints are the load test's (`bench.population`): what the Calico CNI plugin writes for a pod, about
600 bytes stored, with two IP networks, a tenth with an IP NAT, two ports and seven labels. Every Rust
result is checked against Python's bytes before anything is timed. Figures are per endpoint: a batch's
time divided by its size, median and 99th percentile over the timed calls. The implementations take turns
(`--rounds` slices of each), so the shared machine's load weighs on all alike; a call of one right after
Python's turn finds the caches cold, as it would in the server, and is slower per endpoint than a batch.

    .venv/bin/python -m bench.bench_validation
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from tests.validation_reference import normalize_workload_endpoint

from bench import report
from bench.population import Shape, endpoint
from epsync._core import normalize_endpoints
from epsync.model.kinds import WORKLOAD_ENDPOINTS
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

BATCHES = (1, 100, 1000)
TARGET = 20  # Rust at least this many times faster than Python, median per endpoint


def python_store(wep: WorkloadEndpoint, uid: str, created: Timestamp) -> bytes:
    """What the server does for a create today (registry: normalise, stamp, encode)."""
    new = normalize_workload_endpoint(wep)
    new.metadata.uid = uid
    new.metadata.creation_timestamp.CopyFrom(created)
    return WORKLOAD_ENDPOINTS.encode(new)


def per_endpoint(samples: Sequence[int], size: int) -> tuple[float, float]:
    """Median and 99th percentile of per-call nanoseconds, per endpoint, in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) / size / 1000, p99 / size / 1000


def timed(calls: Sequence[Callable[[], object]]) -> list[int]:
    """Nanoseconds each call took."""
    samples = []
    for call in calls:
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def bind(function: Callable[..., object], *args: object) -> Callable[[], object]:
    return lambda: function(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=2000, help="distinct endpoints, cycled through")
    parser.add_argument("--runs", type=int, default=6000, help="endpoints validated per implementation and batch size")
    parser.add_argument("--rounds", type=int, default=20, help="round-robin rounds the runs are split into")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()

    shape = Shape(nodes=max(1, args.endpoints // 20), per_node=20, seed=args.seed)
    weps = [endpoint(j, shape) for j in range(args.endpoints)]
    uids = [str(uuid.UUID(int=j + 1)) for j in range(args.endpoints)]
    created = Timestamp(seconds=1_767_225_600, nanos=123_000_000)
    stamp = (created.seconds, created.nanos)
    items = [(wep.SerializeToString(), uid, stamp) for wep, uid in zip(weps, uids, strict=True)]

    expected = [python_store(wep, uid, created) for wep, uid in zip(weps, uids, strict=True)]
    assert normalize_endpoints(items) == expected, "Rust and Python disagree"
    stored_bytes = statistics.mean(len(b) for b in expected)
    print(f"{args.endpoints:,} endpoints, {stored_bytes:.0f} bytes stored on average, Rust == Python")

    n = len(weps)

    def from_message(i: int) -> object:
        wep = weps[i % n]
        return normalize_endpoints([(wep.SerializeToString(), uids[i % n], stamp)])

    # (implementation, side, batch size, the calls to time)
    plan: list[tuple[str, str, int, list[Callable[[], object]]]] = [
        (
            "python reference",
            "python",
            1,
            [bind(python_store, weps[i % n], uids[i % n], created) for i in range(args.runs)],
        )
    ]
    for batch in BATCHES:
        calls = max(3 * args.rounds, args.runs // batch)
        batches = [[items[(c * batch + k) % n] for k in range(batch)] for c in range(calls)]
        plan.append((f"rust, batch of {batch}", "rust", batch, [bind(normalize_endpoints, b) for b in batches]))
    plan.append(
        (
            "rust, batch of 1, from a message (+ SerializeToString)",
            "rust + serialize",
            1,
            [bind(from_message, i) for i in range(args.runs)],
        )
    )

    gc.collect()
    gc.freeze()
    # Round robin over the implementations, a slice of each per round, so that a change in the machine's load
    # (it is shared) weighs on all of them alike.
    samples: list[list[int]] = [[] for _ in plan]
    for r in range(args.rounds):
        for i, (_, _, _, calls) in enumerate(plan):
            samples[i] += timed(calls[r :: args.rounds])

    python_median = per_endpoint(samples[0], 1)[0]
    rows: list[report.Row] = []
    for (implementation, side, batch, _), taken in zip(plan, samples, strict=True):
        median, p99 = per_endpoint(taken, batch)
        result: dict[str, object] = {
            "implementation": implementation,
            "side": side,
            "batch": batch,
            "median_us": median,
            "p99_us": p99,
            "calls": len(taken),
        }
        if side != "python":
            result["x_vs_python"] = python_median / median
        rows.append(result)

    report.print_table(rows, ["implementation", "batch", "median_us", "p99_us", "calls", "x_vs_python"])
    slowest = min(float(r["x_vs_python"]) for r in rows if r["side"] == "rust")
    print(f"slowest Rust speed-up (median per endpoint): {slowest:.1f}x (target {TARGET}x)")
    parameters = {
        "endpoints": args.endpoints,
        "runs": args.runs,
        "rounds": args.rounds,
        "seed": args.seed,
        "stored_bytes": round(stored_bytes),
    }
    plot = report.Plot(
        x="batch",
        y="median_us",
        series="side",
        title=f"Validate + normalise + encode, per endpoint (dashed: Python / {TARGET})",
        log_x=True,
        log_y=True,
        threshold=python_median / TARGET,
    )
    report.write("validation", parameters, rows, plot, args.out)


if __name__ == "__main__":
    main()
