"""The worst stall one request causes everyone else: a watch carrying N known resource versions.

SPEC's known-versions resume sends the versions a client holds; the server computes the difference.
A request with a very large map is cheap to send and used to hold the server's event loop for
seconds. This starts `epsync serve` (one process, SQLite, in a temporary directory), stores a few
endpoints, and while a prober (a process of its own) sends a Get every millisecond, opens watches
whose request carries N known versions (keys of endpoints that do not exist, so the whole
difference is deletions); the figure is the prober's slowest answer in a window while that request
is served, against its slowest answer in a window with no such request: the median of `--repeat`
of each.

    .venv/bin/python -m bench.bench_stall --known 100 1000 5000 10000 10001   # 10,000: the server's limit
    .venv/bin/python -m bench.bench_stall --known 10000 --repeat 21
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench import report
from bench.loop_gaps import loop_gaps
from bench.population import Shape, endpoint
from epsync.model.kinds import MAX_KNOWN_VERSIONS
from epsync.server.registration import read_known_versions
from epsync.store.base import Snapshot
from epsync.sync.cache import ResourceCache
from epsync.sync.endpoint_hub import EndpointWatchHub
from epsync.sync.hub import BookmarkPolicy
from epsync.sync.watcher import WatcherLimits
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc

SERVING = re.compile(rb"epsync serving on (\S+)")
KNOWN_FIELD = pb.WatchWorkloadEndpointsRequest.DESCRIPTOR.fields_by_name["known_resource_versions"].number
# Each watch, and each quiet stretch it is compared with, is a window this long of the prober's answers.
WINDOW = 0.3
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
    """A Get every millisecond from a process of its own (so that neither the watch's request nor its answer,
    built and read in this process, delays a probe); the slowest answer in a window of time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.samples: list[tuple[float, float]] = []  # (start, seconds), on the machine's monotonic clock

    @classmethod
    async def start(cls, address: str, name: str) -> Prober:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.bench_stall", "--probe", address, name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        await process.stdout.readline()  # "probing": its first answer came
        return cls(process)

    async def stop(self) -> None:
        """Ends the probing (closing its stdin) and reads every sample it took."""
        output, _ = await self._process.communicate(b"")
        self.samples = [(began, seconds) for began, seconds in json.loads(output)]

    def slowest(self, start: float, end: float) -> float:
        inside = [seconds for began, seconds in self.samples if start <= began <= end]
        return max(inside, default=0.0)


async def probe(address: str, name: str) -> None:
    """The prober's process: a Get every millisecond until stdin closes, then every sample as JSON on stdout.
    `time.perf_counter` is CLOCK_MONOTONIC on Linux, so the samples line up with the parent's times."""
    samples: list[tuple[float, float]] = []
    async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
        stub = pb_grpc.WorkloadEndpointServiceStub(channel)
        request = pb.GetWorkloadEndpointRequest(namespace="ns-0", name=name)
        await stub.GetWorkloadEndpoint(request)
        print("probing", flush=True)
        stdin = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        closed = asyncio.ensure_future(stdin.read())
        while not closed.done():
            started = time.perf_counter()
            await stub.GetWorkloadEndpoint(request)
            samples.append((started, time.perf_counter() - started))
            await asyncio.sleep(0.001)
    print(json.dumps(samples))


def watch_request(known: int) -> pb.WatchWorkloadEndpointsRequest:
    request = pb.WatchWorkloadEndpointsRequest(namespace="ns-0", send_initial_events=True)
    request.known_resource_versions.update({f"gone-{i}": i + 1 for i in range(known)})
    return request


async def one_watch(stub: pb_grpc.WorkloadEndpointServiceAsyncStub, request: pb.WatchWorkloadEndpointsRequest) -> str:
    """Open a watch; its outcome (OK or the status code) once its first answer came."""
    call = stub.WatchWorkloadEndpoints(request)
    try:
        async for _ in call:
            return "OK"
    except grpc.aio.AioRpcError as error:
        return error.code().name
    finally:
        call.cancel()
    return "ended"


async def loop_hold(request: pb.WatchWorkloadEndpointsRequest) -> float:
    """The longest the event loop is held at a time while the server's own code reads `request`, starts its
    watch and composes every response of its catch-up, measured in this process by a task that only yields
    (no gRPC, no other process competing for the two cores: the server's part alone)."""
    cache = ResourceCache()
    cache.load(Snapshot(1, []))
    hub = EndpointWatchHub(cache, WatcherLimits(), BookmarkPolicy())
    raw = request.SerializeToString()
    async with loop_gaps() as gaps:
        rest, known = read_known_versions(raw, KNOWN_FIELD)
        if len(known) <= MAX_KNOWN_VERSIONS:  # past it the server refuses the request here
            watcher = await hub.start(pb.WatchWorkloadEndpointsRequest.FromString(rest), known)
            while watcher.queued_events:
                await watcher.next_response()
            hub.remove(watcher)
    return gaps.longest


async def measure(args: argparse.Namespace) -> list[report.Row]:
    rows: list[report.Row] = []
    shape = Shape(nodes=10, per_node=10, namespaces=1)
    with tempfile.TemporaryDirectory(prefix="epsync-bench-stall-") as tmp:
        process, address = await serve(Path(tmp))
        try:
            async with grpc.aio.insecure_channel(address, options=OPTIONS) as channel:
                stub = pb_grpc.WorkloadEndpointServiceStub(channel)
                population = [endpoint(j, shape) for j in range(shape.endpoints)]
                for obj in population:
                    await stub.UpdateWorkloadEndpoint(
                        pb.UpdateWorkloadEndpointRequest(workload_endpoint=obj, allow_missing=True)
                    )
                prober = await Prober.start(address, population[0].metadata.name)
                windows: list[tuple[int, str, float, float, float]] = []  # (known, outcome, start, first answer, end)
                holds: dict[int, list[float]] = {}
                for known in args.known:
                    request = watch_request(known)  # built before the window opens
                    holds[known] = [await loop_hold(request) for _ in range(args.repeat)]
                    for _ in range(args.repeat):
                        quiet_start = time.perf_counter()
                        await asyncio.sleep(WINDOW)
                        windows.append((0, "", quiet_start, quiet_start, time.perf_counter()))
                        started = time.perf_counter()
                        outcome = await one_watch(stub, request)
                        answered = time.perf_counter()
                        await asyncio.sleep(WINDOW - (answered - started))  # held-up probes' answers arrive
                        windows.append((known, outcome, started, answered, time.perf_counter()))
                await prober.stop()
        finally:
            process.terminate()
            await process.wait()
    for known in args.known:
        held = [(outcome, answered - s, prober.slowest(s, e)) for k, outcome, s, answered, e in windows if k == known]
        quiet = [prober.slowest(s, e) for k, _, s, _, e in windows if k == 0]
        rows.append(
            {
                "known_versions": known,
                "outcome": held[0][0],
                "first_answer_ms": statistics.median(first for _, first, _ in held) * 1000,
                "others_slowest_ms": statistics.median(slowest for *_, slowest in held) * 1000,
                "others_slowest_max_ms": max(slowest for *_, slowest in held) * 1000,
                "others_slowest_quiet_ms": statistics.median(quiet) * 1000,
                "loop_hold_ms": statistics.median(holds[known]) * 1000,
                "loop_hold_max_ms": max(holds[known]) * 1000,
            }
        )
        print(", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
    return rows


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        asyncio.run(probe(sys.argv[2], sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="watches a size (the median is reported)")
    parser.add_argument(
        "--known", type=int, nargs="+", default=[100, 1_000, 5_000, 10_000, 10_001], help="known versions"
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    columns = [
        "known_versions", "outcome", "first_answer_ms", "others_slowest_ms", "others_slowest_max_ms",
        "others_slowest_quiet_ms", "loop_hold_ms", "loop_hold_max_ms",
    ]  # fmt: skip
    report.print_table(rows, columns)
    plot = report.Plot(
        x="known_versions", y="others_slowest_ms", title="Slowest Get of another client (ms)", log_x=True
    )
    report.write("stall", {"known": args.known, "repeat": args.repeat, "window_s": WINDOW}, rows, plot, args.out)


if __name__ == "__main__":
    main()
