"""Write throughput and latency of a datastore against the number of concurrent writers.

Each writer awaits one `write()` (one Put) at a time, like a unary RPC; group commit lets many
writers share one transaction and one fsync, so writes/s should grow with concurrency while a
lone writer pays a full fsync per write. With `--backend etcd` the same through the etcd
datastore: concurrent calls share etcd transactions (up to 128 ops), and each `write()` returns
once the store's watch has delivered it (read-your-writes), so the figures include that round trip.

    .venv/bin/python -m bench.bench_store                       # 1, 10, 100, 1000 writers, 3 s each
    .venv/bin/python -m bench.bench_store --writers 1 50 --seconds 5
    .venv/bin/python -m bench.bench_store --backend etcd        # starts a throwaway etcd (make etcd)
    .venv/bin/python -m bench.bench_store --backend etcd --etcd-endpoints 10.0.0.1:2379
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from bench import report
from bench.loadtest.sut import EtcdProcess, etcd_binary
from epsync.store.base import Datastore, Kind, Put
from epsync.store.etcd import EtcdDatastore
from epsync.store.sqlite import SqliteDatastore


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def groups(store: Datastore) -> tuple[int, int]:
    """(groups or txns committed, writes in them) so far."""
    if isinstance(store, EtcdDatastore):
        return store.txns_committed, store.writes_committed
    assert isinstance(store, SqliteDatastore)
    return store.groups_committed, store.writes_committed


async def run_level(
    directory: Path,
    writers: int,
    seconds: float,
    value_size: int,
    keys: int,
    max_group: int,
    etcd_endpoints: list[str] | None = None,
) -> dict[str, float]:
    store: Datastore
    if etcd_endpoints is not None:
        store = EtcdDatastore(etcd_endpoints, prefix=f"/epsync-bench/{uuid.uuid4().hex}/", max_group=max_group)
    else:
        store = SqliteDatastore(directory / f"bench-{writers}.db", max_group=max_group)
    await store.open()
    value = os.urandom(value_size)
    latencies: list[float] = []
    stop = asyncio.Event()

    # The same key space at every level, each writer cycling through its own share of it, so levels
    # differ only in concurrency (a bigger table dirties more pages per write, which would skew them).
    share = max(1, keys // writers)

    async def writer(worker: int) -> None:
        i = 0
        while not stop.is_set():
            started = time.perf_counter()
            key = f"bench/{worker * share + i % share:07}"
            await store.write([Put(Kind.WORKLOAD_ENDPOINT, key, value)])
            latencies.append(time.perf_counter() - started)
            i += 1

    try:
        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        await asyncio.sleep(min(0.5, seconds / 5))  # warm-up, not measured
        latencies.clear()
        groups_before, writes_before = groups(store)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        measured = list(latencies)
        groups_after, writes_after = groups(store)
        groups_done, writes = groups_after - groups_before, writes_after - writes_before
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        await store.close()
    measured.sort()
    return {
        "writers": writers,
        "writes_per_second": len(measured) / elapsed,
        "p50_ms": percentile(measured, 0.50) * 1000,
        "p99_ms": percentile(measured, 0.99) * 1000,
        "mean_ms": statistics.fmean(measured) * 1000,
        "avg_group_size": writes / groups_done if groups_done else 0.0,
        "groups_per_second": groups_done / elapsed,
    }


@contextlib.asynccontextmanager
async def throwaway_etcd(directory: Path) -> AsyncIterator[list[str]]:
    """A one-member etcd in `directory` for the run: the load test's (`make etcd` installs the binary)."""
    server = EtcdProcess(etcd_binary(), directory / "etcd", directory / "etcd.log")
    await server.start()
    try:
        yield [server.target]
    finally:
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "etcd"], default="sqlite")
    parser.add_argument("--etcd-endpoints", nargs="+", default=None, help="an etcd to use (default: start one)")
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per level")
    parser.add_argument("--value-size", type=int, default=600, help="bytes per value (a typical endpoint)")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct keys in all (endpoints in the cluster)")
    parser.add_argument("--max-group", type=int, default=1000, help="most writes per group commit")
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=report.RESULTS, help="where store.json and store.png go")
    args = parser.parse_args()

    async with contextlib.AsyncExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="epsync-bench-", dir=args.dir)))
        endpoints: list[str] | None = None
        if args.backend == "etcd":
            endpoints = args.etcd_endpoints or await stack.enter_async_context(throwaway_etcd(directory))
            print(f"etcd datastore at {','.join(endpoints)}, ", end="")
        else:
            print(f"SQLite datastore, files in {directory}, ", end="")
        print(f"{args.value_size}-byte values, {args.seconds:g}s per level")
        results: list[report.Row] = []
        for writers in args.writers:
            row = await run_level(
                directory, writers, args.seconds, args.value_size, args.keys, args.max_group, endpoints
            )
            results.append(row)
            print(f"  {writers} writers: {row['writes_per_second']:,.0f} writes/s", flush=True)
    columns = ["writers", "writes_per_second", "p50_ms", "p99_ms", "avg_group_size", "groups_per_second"]
    report.print_table(results, columns)
    parameters = {k: getattr(args, k) for k in ("backend", "value_size", "keys", "max_group", "seconds")}
    if args.backend == "etcd":
        title, name = "etcd datastore (shared txns): writes/s vs writers", "store-etcd"
    else:
        title, name = "SQLite group commit: writes/s vs writers", "store"
    plot = report.Plot(x="writers", y="writes_per_second", title=title, log_x=True)
    report.write(name, parameters, results, plot, args.out)


if __name__ == "__main__":
    asyncio.run(main())
