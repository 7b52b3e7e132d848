"""The worst stall one request causes everyone else: a watch carrying N known resource versions.

SPEC's known-versions resume sends the versions a client holds; the server computes the difference.
A request with a very large map is cheap to send and used to hold the server's event loop for
seconds. This starts `epsync serve` (one process, SQLite, in a temporary directory), stores a few
endpoints, and while a prober sends a Get every millisecond on its own connection, opens one watch
whose request carries N known versions (keys of endpoints that do not exist, so the whole
difference is deletions); the figure is the prober's slowest answer while that request is served,
against its slowest answer with no such request.

    .venv/bin/python -m bench.bench_stall                     # N = 1,000 ... the server's limit
    .venv/bin/python -m bench.bench_stall --known 10000 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import report
from bench.population import Shape, endpoint
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc

SERVING = re.compile(rb"epsync serving on (\S+)")
OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]


_BACKGROUND: set[asyncio.Task[None]] = set()


async def serve(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "epsync", "serve", "--listen", "127.0.0.1:0", "--workers", "1",
        "--data-dir", str(data_dir), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while line := await process.stderr.readline():
            if found := SERVING.search(line):
                drain = asyncio.create_task(_discard(process.stderr))  # so that a full pipe never stalls it
                _BACKGROUND.add(drain)
                drain.add_done_callback(_BACKGROUND.discard)
                return process, found.group(1).decode()
    raise RuntimeError(f"the server exited with {await process.wait()}")


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


class Prober:
    """A Get every `interval` seconds on its own connection; the slowest answer in a window."""

    def __init__(self, stub: pb_grpc.WorkloadEndpointServiceAsyncStub, name: str, interval: float = 0.001) -> None:
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self._task = asyncio.create_task(self._run(stub, name, interval))

    async def _run(self, stub: pb_grpc.WorkloadEndpointServiceAsyncStub, name: str, interval: float) -> None:
        request = pb.GetWorkloadEndpointRequest(namespace="ns-0", name=name)
        while True:
            started = time.perf_counter()
            await stub.GetWorkloadEndpoint(request)
            self.samples.append((started, time.perf_counter() - started))
            await asyncio.sleep(interval)

    def slowest(self, start: float, end: float) -> float:
        inside = [seconds for began, seconds in self.samples if start <= began <= end]
        return max(inside, default=0.0)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def one_watch(stub: pb_grpc.WorkloadEndpointServiceAsyncStub, known: int) -> tuple[str, float]:
    """Open a watch with `known` versions; its outcome (OK or the status code) and seconds to its first answer."""
    request = pb.WatchWorkloadEndpointsRequest(namespace="ns-0", send_initial_events=True)
    request.known_resource_versions.update({f"gone-{i}": i + 1 for i in range(known)})
    started = time.perf_counter()
    call = stub.WatchWorkloadEndpoints(request)
    try:
        async for _ in call:
            return "OK", time.perf_counter() - started
    except grpc.aio.AioRpcError as error:
        return error.code().name, time.perf_counter() - started
    finally:
        call.cancel()
    return "ended", time.perf_counter() - started


async def measure(args: argparse.Namespace) -> list[report.Row]:
    rows: list[report.Row] = []
    shape = Shape(nodes=10, per_node=10, namespaces=1)
    with tempfile.TemporaryDirectory(prefix="epsync-bench-stall-") as tmp:
        process, address = await serve(Path(tmp))
        try:
            async with (
                grpc.aio.insecure_channel(address, options=OPTIONS) as probe_channel,
                grpc.aio.insecure_channel(address, options=OPTIONS) as watch_channel,
            ):
                probe_stub = pb_grpc.WorkloadEndpointServiceStub(probe_channel)
                watch_stub = pb_grpc.WorkloadEndpointServiceStub(watch_channel)
                population = [endpoint(j, shape) for j in range(shape.endpoints)]
                for obj in population:
                    await probe_stub.UpdateWorkloadEndpoint(
                        pb.UpdateWorkloadEndpointRequest(workload_endpoint=obj, allow_missing=True)
                    )
                prober = Prober(probe_stub, population[0].metadata.name)
                await asyncio.sleep(1.0)
                quiet_end = time.perf_counter()
                baseline = prober.slowest(quiet_end - 1.0, quiet_end)
                for known in args.known:
                    started = time.perf_counter()
                    outcome, seconds = await one_watch(watch_stub, known)
                    await asyncio.sleep(0.2)  # the prober's answers that were held up arrive
                    slowest = prober.slowest(started, time.perf_counter())
                    rows.append(
                        {
                            "known_versions": known,
                            "outcome": outcome,
                            "first_answer_ms": seconds * 1000,
                            "others_slowest_ms": slowest * 1000,
                            "others_slowest_quiet_ms": baseline * 1000,
                        }
                    )
                    print(
                        ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items())
                    )
                await prober.stop()
        finally:
            process.terminate()
            await process.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--known", type=int, nargs="+", default=[1_000, 10_000, 100_000, 200_000, 400_000], help="known versions"
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    columns = ["known_versions", "outcome", "first_answer_ms", "others_slowest_ms", "others_slowest_quiet_ms"]
    report.print_table(rows, columns)
    plot = report.Plot(
        x="known_versions", y="others_slowest_ms", title="Slowest Get of another client (ms)", log_x=True
    )
    report.write("stall", {"known": args.known}, rows, plot, args.out)


if __name__ == "__main__":
    main()
