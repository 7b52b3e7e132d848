"""Server CPU per write: unary writes and the write stream (one write or a batch per request), with 0, 1 and 10
watchers receiving each write.

The server runs as its own process (`epsync serve` on SQLite, in a temporary directory); this
process writes and watches. The figure that matters is the server's CPU time (user + system,
from /proc) per write, measured over a fixed number of writes that each update one endpoint of
node-0, so every watcher of node-0 receives every write. Throughput is printed too, but on a
shared 2-core machine it depends on the client as much as on the server.

    .venv/bin/python -m bench.bench_writes                 # 5,000 writes per point
    .venv/bin/python -m bench.bench_writes --writes 20000 --watchers 0 10
    .venv/bin/python -m bench.bench_writes --server-workers 1 2   # one process against an owner and a worker

With `--server-workers`, this checkout's server runs once per count given (`epsync serve --workers N`),
side by side; its CPU is the owner's plus its workers', and each row also gives the owner's share.
With more than one process, every point is measured twice: with the client connected to the owner
and to a worker (whose writes the owner commits), found by opening connections until one lands on
each (the kernel chooses; /proc says where).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from pathlib import Path

import grpc

from bench import report
from bench.loadtest import procstat
from bench.population import Shape, endpoint
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as pb_grpc
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

SERVING = re.compile(rb"epsync serving on (\S+)")
UNARY_CONCURRENCY = 64


class Server:
    """`python -m epsync serve` of this checkout or of another (`checkout`, with its own .venv): its address
    read back from its log."""

    def __init__(
        self, data_dir: Path, checkout: Path | None = None, workers: int = 1, transport: str | None = None
    ) -> None:
        self.data_dir = data_dir
        self.checkout = checkout
        self.workers = workers
        self.transport = transport
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""

    def _command(self) -> list[str]:
        if self.checkout is None:
            command = [sys.executable, "-m", "epsync", "serve", "--listen", "127.0.0.1:0"]
            command += ["--workers", str(self.workers)]
            return command + (["--transport", self.transport] if self.transport else [])
        # An older checkout may have only `python -m epsync.cli` and may log the port it was given rather than
        # the one it bound, so it gets a port chosen here (a benchmark can live with the small race).
        module = "epsync.cli" if (self.checkout / "pysrc/epsync/cli.py").exists() else "epsync"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return [str(self.checkout / ".venv/bin/python"), "-m", module, "serve", "--listen", f"127.0.0.1:{port}"]

    async def __aenter__(self) -> Server:
        self.process = await asyncio.create_subprocess_exec(
            *self._command(), "--data-dir", str(self.data_dir), stderr=asyncio.subprocess.PIPE,
            cwd=self.checkout,
        )  # fmt: skip
        assert self.process.stderr is not None
        serving = 0  # the owner and each worker log that they serve
        async with asyncio.timeout(60):
            while serving < self.workers and (line := await self.process.stderr.readline()):
                found = SERVING.search(line)
                if found:
                    self.address = found.group(1).decode()
                    serving += 1
        if not self.address:
            raise RuntimeError(f"the server exited with status {await self.process.wait()}")
        # Keep reading its log so the pipe never fills and stalls the server.
        self._drain = asyncio.create_task(self._discard(self.process.stderr))
        return self

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        await self.process.wait()
        self._drain.cancel()

    def usage(self) -> tuple[float, float, int]:
        """CPU seconds of the owner, CPU seconds of the owner and its workers, and their RSS in bytes now."""
        assert self.process is not None
        owner = procstat.sample(self.process.pid)
        workers = [w for w in map(procstat.sample_if_running, procstat.children(self.process.pid)) if w]
        everyone = [owner, *workers]
        return owner.cpu_seconds, sum(p.cpu_seconds for p in everyone), sum(p.rss_bytes for p in everyone)


def update(obj: WorkloadEndpoint, generation: int) -> pb.UpdateWorkloadEndpointRequest:
    changed = WorkloadEndpoint()
    changed.CopyFrom(obj)
    changed.metadata.labels["generation"] = str(generation)
    return pb.UpdateWorkloadEndpointRequest(workload_endpoint=changed, allow_missing=True)


async def write_stream(
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub, updates: Sequence[pb.UpdateWorkloadEndpointRequest]
) -> None:
    requests = (pb.WriteWorkloadEndpointsRequest(request_id=str(i), update=u) for i, u in enumerate(updates))
    await _all_written(stub.WriteWorkloadEndpoints(requests))


async def _all_written(responses: AsyncIterable[pb.WriteWorkloadEndpointsResponse]) -> None:
    """Read a write stream's answers to the end; the first write that failed raises."""
    async for response in responses:
        if response.status.code:
            raise RuntimeError(f"write {response.request_id} failed: {response.status.message}")


class Unsupported(Exception):
    """The server does not know the request's batch field (an older server)."""


async def batched_stream(
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub, updates: Sequence[pb.UpdateWorkloadEndpointRequest], size: int
) -> None:
    """The write stream with `size` writes per request (the request's `batch`), answered `size` to a response."""
    writes = [pb.WriteWorkloadEndpointsRequest(request_id=str(i), update=u) for i, u in enumerate(updates)]
    requests = (pb.WriteWorkloadEndpointsRequest(batch=writes[i : i + size]) for i in range(0, len(writes), size))
    async for response in stub.WriteWorkloadEndpoints(requests):
        if not response.batch:
            raise Unsupported(response.status.message)
        for result in response.batch:
            if result.status.code:
                raise RuntimeError(f"write {result.request_id} failed: {result.status.message}")


async def paced_stream(
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub, updates: Sequence[pb.UpdateWorkloadEndpointRequest], rate: float
) -> None:
    """The write stream at `rate` writes a second, each sent alone on schedule: the shape of a lightly loaded
    server, where every write pays the per-batch costs (hand-offs, commit, publication) by itself."""
    started = time.perf_counter()

    async def requests() -> AsyncIterator[pb.WriteWorkloadEndpointsRequest]:
        for i, write in enumerate(updates):
            due = started + i / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            yield pb.WriteWorkloadEndpointsRequest(request_id=str(i), update=write)

    await _all_written(stub.WriteWorkloadEndpoints(requests()))


async def unary(
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub, updates: Sequence[pb.UpdateWorkloadEndpointRequest]
) -> None:
    pending = iter(updates)

    async def worker() -> None:
        for request in pending:
            await stub.UpdateWorkloadEndpoint(request)

    await asyncio.gather(*(worker() for _ in range(UNARY_CONCURRENCY)))


class Watchers:
    """`count` watchers of one node, each counting the events it receives."""

    def __init__(self, stub: pb_grpc.WorkloadEndpointServiceAsyncStub, node: str, count: int) -> None:
        self.received = [0] * count
        self.synced = [asyncio.Event() for _ in range(count)]
        self._progress = asyncio.Event()  # set whenever a watcher counts events
        self._tasks = [asyncio.create_task(self._watch(stub, node, i)) for i in range(count)]

    async def _watch(self, stub: pb_grpc.WorkloadEndpointServiceAsyncStub, node: str, i: int) -> None:
        request = pb.WatchWorkloadEndpointsRequest(node=node, send_initial_events=True)
        async for response in stub.WatchWorkloadEndpoints(request):
            for event in response.events:
                if event.initial_events_end:
                    self.synced[i].set()
                elif self.synced[i].is_set():
                    self.received[i] += 1
            self._progress.set()

    async def wait_synced(self) -> None:
        await asyncio.gather(*(event.wait() for event in self.synced))

    async def wait_received(self, each: int, within: float = 60.0) -> None:
        async with asyncio.timeout(within):
            while any(count < each for count in self.received):
                self._progress.clear()
                await self._progress.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def measure(args: argparse.Namespace) -> list[report.Row]:
    shape = Shape(nodes=args.nodes, per_node=args.per_node, namespaces=10)
    population = [endpoint(j, shape) for j in range(shape.endpoints)]
    on_node0 = population[: shape.per_node]
    rows: list[report.Row] = []
    servers: dict[str, tuple[Path | None, int, str | None]] = {}
    for transport in args.transports:
        for n in args.server_workers:
            name = "this" if len(args.server_workers) == 1 else f"this w{n}"
            name += f" {transport}" if len(args.transports) > 1 else ""
            servers[name] = (None, n, transport)
    if args.baseline is not None:
        servers["baseline"] = (args.baseline, 1, None)
    with tempfile.TemporaryDirectory(prefix="epsync-bench-writes-") as tmp:
        async with contextlib.AsyncExitStack() as stack:
            stubs: dict[str, tuple[Server, pb_grpc.WorkloadEndpointServiceAsyncStub]] = {}
            for name, (checkout, workers, transport) in servers.items():
                directory = Path(tmp) / name.replace(" ", "-")
                server = await stack.enter_async_context(Server(directory, checkout, workers, transport))
                connected = await connect_to_each_process(server, stack)
                stored = [pb.UpdateWorkloadEndpointRequest(workload_endpoint=e, allow_missing=True) for e in population]
                await write_stream(next(iter(connected.values())), stored)
                for where, stub in connected.items():
                    stubs[f"{name} via {where}" if workers > 1 else name] = (server, stub)
            generation = 0
            for watcher_count in args.watchers:
                for mode in args.modes:
                    updates = [
                        update(on_node0[(generation + i) % len(on_node0)], generation + i) for i in range(args.writes)
                    ]
                    generation += args.writes
                    for name, (server, stub) in stubs.items():  # side by side: the same writes, one after the other
                        row = await measure_point(args, server, stub, mode, watcher_count, updates)
                        if row is None:
                            print(f"{name}: {mode} is not supported by this server")
                            continue
                        rows.append({"server": name, **row})
                        print(
                            ", ".join(
                                f"{k} {v:,.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
                            )
                        )
    return rows


async def connect_to_each_process(
    server: Server, stack: contextlib.AsyncExitStack
) -> dict[str, pb_grpc.WorkloadEndpointServiceAsyncStub]:
    """A connection to the owner and, with workers, one to a worker: {"owner": stub, "worker": stub}."""
    assert server.process is not None
    owner = server.process.pid
    port = int(server.address.rpartition(":")[2])
    found: dict[str, pb_grpc.WorkloadEndpointServiceAsyncStub] = {}
    for _ in range(64):
        pids = [owner, *procstat.children(owner)]
        before = procstat.connections_by_process(pids, port)
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.address, options=options))
        await channel.channel_ready()
        after = procstat.connections_by_process(pids, port)
        (landed,) = [pid for pid in pids if after[pid] - before[pid]]
        where = "owner" if landed == owner else "worker"
        found.setdefault(where, pb_grpc.WorkloadEndpointServiceStub(channel))
        if len(found) == min(2, server.workers):
            return found
    raise RuntimeError(f"64 connections did not reach every kind of process: {sorted(found)}")


async def measure_point(
    args: argparse.Namespace,
    server: Server,
    stub: pb_grpc.WorkloadEndpointServiceAsyncStub,
    mode: str,
    watcher_count: int,
    updates: Sequence[pb.UpdateWorkloadEndpointRequest],
) -> report.Row | None:
    watchers = Watchers(stub, updates[0].workload_endpoint.spec.node, watcher_count)
    try:
        await watchers.wait_synced()
        (owner_before, cpu_before, _), started = server.usage(), time.perf_counter()
        if mode == "stream":
            await write_stream(stub, updates)
        elif mode == "batched":
            await batched_stream(stub, updates, args.batch)
        elif mode == "paced":
            await paced_stream(stub, updates, args.rate)
        else:
            await unary(stub, updates)
        await watchers.wait_received(len(updates))
        seconds = time.perf_counter() - started
        owner_after, cpu_after, rss = server.usage()
        cpu, owner_cpu = cpu_after - cpu_before, owner_after - owner_before
    except Unsupported:
        return None
    finally:
        await watchers.stop()
    return {
        "mode": mode,
        "watchers": watcher_count,
        "writes": len(updates),
        "writes_per_second": len(updates) / seconds,
        "server_cpu_us_per_write": cpu / len(updates) * 1e6,
        "server_cores": cpu / seconds,
        "owner_share": owner_cpu / cpu if cpu else 1.0,
        "server_rss_mb": rss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=50, help="nodes with stored endpoints")
    parser.add_argument("--per-node", type=int, default=40, help="endpoints stored on each node")
    parser.add_argument("--writes", type=int, default=5_000, help="timed writes per point")
    parser.add_argument("--watchers", type=int, nargs="+", default=[0, 1, 10], help="watchers of the written node")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["unary", "stream", "batched", "paced"],
        default=["unary", "stream", "batched"],
        help="unary calls (64 at a time), the write stream one write per request, --batch writes per request, or "
        "one write per request at --rate writes/s (each write alone, as on a lightly loaded server)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="writes/s of the paced mode")
    parser.add_argument("--batch", type=int, default=100, help="writes per request in the batched mode")
    parser.add_argument(
        "--server-workers",
        type=int,
        nargs="+",
        default=[1],
        help="epsync serve --workers of this checkout's server; several counts are measured side by side",
    )
    parser.add_argument(
        "--transports",
        nargs="+",
        choices=["rust", "grpcio"],
        default=[None],
        help="epsync serve --transport of this checkout's server; several are measured side by side",
    )
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout (with its .venv built, e.g. a git worktree of an older commit) whose server is "
        "measured side by side with this one's, point by point",
    )
    parser.add_argument("--out", type=Path, default=report.RESULTS)
    args = parser.parse_args()
    rows = asyncio.run(measure(args))
    print(f"server CPU per write, {args.writes:,} writes per point, {args.nodes * args.per_node:,} endpoints stored")
    columns = [
        "server",
        "mode",
        "watchers",
        "writes",
        "writes_per_second",
        "server_cpu_us_per_write",
        "server_cores",
        "owner_share",
        "server_rss_mb",
    ]
    report.print_table(rows, columns)
    parameters = {
        "nodes": args.nodes,
        "per_node": args.per_node,
        "batch": args.batch,
        "rate": args.rate,
        "writes": args.writes,
        "label": args.label,
        "baseline": str(args.baseline) if args.baseline else None,
        "server_workers": args.server_workers,
    }
    rows = [{**row, "series": f"{row['server']} {row['mode']}"} for row in rows]
    plot = report.Plot(x="watchers", y="server_cpu_us_per_write", series="series", title="Server CPU per write (µs)")
    report.write("writes", parameters, rows, plot, args.out)


if __name__ == "__main__":
    main()
