"""Time a complete List (every page) of 10,000 endpoints through a real server, with and without selectors.

The server runs as its own process (`epsync serve`) on a loopback port with a SQLite store in a
temporary directory; this process is the client, so the figure includes serialisation on both
sides and the network stack, as a node agent or operator would see it.

    .venv/bin/python -m bench.bench_list                    # 10,000 endpoints
    .venv/bin/python -m bench.bench_list --endpoints 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.loadtest.sut import free_port
from bench.population import Shape, endpoint, profiles
from epsync.client import Client
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb

# (label, selector): from everything to a small slice, with and without inherited profile labels
# (shares of the population in bench/population.py).
SELECTORS = (
    ("none", ""),
    ("all via has()", "has(app)"),
    ("own label, 1/10", "app == 'web'"),
    ("inherited, 1/3", "env == 'prod'"),
    ("own + inherited, 1/15", "app in {'web', 'api'} && env == 'prod' && !has(canary)"),
)
PER_NODE = 20  # endpoints per node: 10,000 endpoints on 500 nodes


async def start_server(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "epsync", "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
        "--log-level", "warning",
    )  # fmt: skip
    async with Client(f"127.0.0.1:{port}", timeout=1) as client:
        for _ in range(100):
            if process.returncode is not None:
                raise RuntimeError(f"the server exited with status {process.returncode}")
            try:
                await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1))
                return process
            except Exception:
                await asyncio.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not start")


async def populate(client: Client, endpoints: int, concurrency: int) -> float:
    shape = Shape(nodes=-(-endpoints // PER_NODE), per_node=PER_NODE)
    started = time.perf_counter()
    for profile in profiles(shape):
        await client.create_profile(profile)
    queue = [endpoint(j, shape) for j in reversed(range(endpoints))]

    async def worker() -> None:
        while queue:
            await client.create_endpoint(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def full_list(client: Client, selector: str, page_size: int) -> tuple[float, int, int]:
    """Seconds for every page, the number of items and of pages."""
    started = time.perf_counter()
    request = wep_pb.ListWorkloadEndpointsRequest(label_selector=selector, page_size=page_size)
    items = pages = 0
    while True:
        response = await client.list_endpoints_page(request)
        items += len(response.items)
        pages += 1
        if not response.next_page_token:
            return time.perf_counter() - started, items, pages
        request.page_token = response.next_page_token


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--page-sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--repeat", type=int, default=9, help="timed listings per point; the median is reported")
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="epsync-bench-list-") as tmp:
        port = free_port()
        server = await start_server(Path(tmp), port)
        try:
            async with Client(f"127.0.0.1:{port}", timeout=120) as client:
                seconds = await populate(client, args.endpoints, concurrency=200)
                print(f"created {args.endpoints:,} endpoints in {seconds:.1f}s ({args.endpoints / seconds:,.0f}/s)")
                rows: list[report.Row] = []
                for page_size in args.page_sizes:
                    for label, selector in SELECTORS:
                        await full_list(client, selector, page_size)  # warm-up
                        runs = [await full_list(client, selector, page_size) for _ in range(args.repeat)]
                        times = sorted(run[0] for run in runs)
                        rows.append({
                            "page_size": page_size,
                            "selector": label,
                            "items": runs[0][1],
                            "pages": runs[0][2],
                            "median_ms": statistics.median(times) * 1000,
                            "min_ms": times[0] * 1000,
                            "items_per_second": runs[0][1] / statistics.median(times),
                        })  # fmt: skip
        finally:
            server.terminate()
            await server.wait()

    print(f"complete List through the server, {args.endpoints:,} endpoints stored, median of {args.repeat}")
    report.print_table(rows, ["page_size", "selector", "items", "pages", "median_ms", "min_ms", "items_per_second"])
    parameters = {"endpoints": args.endpoints, "repeat": args.repeat, "selectors": dict(SELECTORS)}
    plot = report.Plot(x="items", y="median_ms", series="page_size", title="Complete List time vs items returned")
    report.write("list", parameters, rows, plot, args.out)


if __name__ == "__main__":
    asyncio.run(main())
