"""What one watch connection costs a grpc.aio server in RSS, and which server options change it.

epsync holds thousands of node agents, each on its own HTTP/2 connection with one open
server-streaming call that gets a small message now and then. The load test's raw grpc.aio server
peaks near 294 MiB with 2,200 such watchers, but that figure mixes its own tables with what the
connections cost, and the per-connection part is what every epsync server pays on top of its data.
This benchmark isolates it: a bare grpc.aio server (generic, protobuf-free handlers, bytes in and
out) in a child process, N client connections opened from M client processes (each channel with a
local subchannel pool, so every channel really is its own TCP + HTTP/2 connection), one
server-streaming call on each. It reads the server's VmRSS (and glibc's heap figures) from inside
the server before the connections, once they are all open, after a few small messages on every
stream, and after throughput bursts (messages/s and server CPU per message), and repeats that for
each named set of server options and environment variables (`OPTION_SETS`), so their
per-connection costs and their effect on throughput can be compared.

    .venv/bin/python -m bench.bench_connections                        # default,app,lean
    .venv/bin/python -m bench.bench_connections --options default,no-channelz --repeat 3
    .venv/bin/python -m bench.bench_connections --no-streams           # the connection alone, no call
    .venv/bin/python -m bench.bench_connections --tracemalloc          # + the Python share per call
    .venv/bin/python -m bench.bench_connections --request-bytes 65536 [--parse-requests] # big requests
    .venv/bin/python -m bench.bench_connections --server-prefix "heaptrack -o /tmp/server"

By default the server gets the first CPU to itself and the clients share the others (`--no-pin`
turns that off); on a 2-core machine that makes messages/s repeatable to about 10%. Every child
runs this module with a hidden `--role`, reads JSON commands on stdin and answers on stdout; every
wait has a timeout and every child is stopped (then killed) on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.loadtest.procstat import cpu_seconds
from bench.loadtest.sut import python_env

SERVICE = "bench.Connections"
METHOD = "Watch"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
KiB = 1 << 10

Json = dict[str, Any]
GrpcOption = tuple[str, Any]


# ---- the option sets compared ----


@dataclass(frozen=True)
class OptionSet:
    """Server channel arguments plus environment variables for the server process."""

    description: str
    options: tuple[GrpcOption, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


BASE: tuple[GrpcOption, ...] = (("grpc.so_reuseport", 0),)
# What epsync's server passes today (pysrc/epsync/server/app.py, grpc_options with default config).
APP: tuple[GrpcOption, ...] = (
    ("grpc.max_send_message_length", 16 * MiB),
    ("grpc.max_receive_message_length", 16 * MiB),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
)
SMALL_READS: tuple[GrpcOption, ...] = (
    ("grpc.experimental.tcp_read_chunk_size", 4 * KiB),
    ("grpc.experimental.tcp_min_read_chunk_size", 256),
    ("grpc.experimental.tcp_max_read_chunk_size", 64 * KiB),
)
SMALL_HPACK: tuple[GrpcOption, ...] = (
    ("grpc.http2.hpack_table_size.decoder", 0),
    ("grpc.http2.hpack_table_size.encoder", 0),
)

OPTION_SETS: dict[str, OptionSet] = {
    "default": OptionSet("grpc.aio defaults (only so_reuseport=0)", BASE),
    "app": OptionSet("epsync's grpc_options() today", APP),
    "streams-1": OptionSet("max_concurrent_streams=1", (*BASE, ("grpc.max_concurrent_streams", 1))),
    "frame-16k": OptionSet("http2.max_frame_size=16384", (*BASE, ("grpc.http2.max_frame_size", 16 * KiB))),
    "write-buffer-16k": OptionSet("http2.write_buffer_size=16384", (*BASE, ("grpc.http2.write_buffer_size", 16 * KiB))),
    "read-chunk-4k": OptionSet("tcp_read_chunk_size=4096, min 256, max 64 KiB", (*BASE, *SMALL_READS)),
    "read-chunk-1k": OptionSet(
        "tcp_read_chunk_size=1024, min 256, max 8 KiB",
        (
            *BASE,
            ("grpc.experimental.tcp_read_chunk_size", 1 * KiB),
            ("grpc.experimental.tcp_min_read_chunk_size", 256),
            ("grpc.experimental.tcp_max_read_chunk_size", 8 * KiB),
        ),
    ),
    "read-max-8k": OptionSet(
        "tcp_max_read_chunk_size=8 KiB", (*BASE, ("grpc.experimental.tcp_max_read_chunk_size", 8 * KiB))
    ),
    "read-chunk-16k": OptionSet(
        "tcp_read_chunk_size=16 KiB (above the 12 KiB switch to 64 KiB slices)",
        (*BASE, ("grpc.experimental.tcp_read_chunk_size", 16 * KiB)),
    ),
    "no-bdp": OptionSet("http2.bdp_probe=0", (*BASE, ("grpc.http2.bdp_probe", 0))),
    "recv-64k": OptionSet("max_receive_message_length=64 KiB", (*BASE, ("grpc.max_receive_message_length", 64 * KiB))),
    "lookahead-16k": OptionSet("http2.lookahead_bytes=16384", (*BASE, ("grpc.http2.lookahead_bytes", 16 * KiB))),
    "hpack-0": OptionSet("hpack_table_size decoder/encoder=0", (*BASE, *SMALL_HPACK)),
    "no-channelz": OptionSet("enable_channelz=0", (*BASE, ("grpc.enable_channelz", 0))),
    "minimal-stack": OptionSet("minimal_stack=1", (*BASE, ("grpc.minimal_stack", 1))),
    "arena-2": OptionSet("MALLOC_ARENA_MAX=2 (glibc)", BASE, {"MALLOC_ARENA_MAX": "2"}),
    "trim-128k": OptionSet(
        "MALLOC_TRIM_THRESHOLD_=128 KiB, MALLOC_ARENA_MAX=2 (glibc)",
        BASE,
        {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": str(128 * KiB)},
    ),
    "fork-support": OptionSet("GRPC_ENABLE_FORK_SUPPORT=1", BASE, {"GRPC_ENABLE_FORK_SUPPORT": "1"}),
    "poll": OptionSet("GRPC_POLL_STRATEGY=poll", BASE, {"GRPC_POLL_STRATEGY": "poll"}),
    "exp-memopt": OptionSet(
        "GRPC_EXPERIMENTS=memory_optimization_01,memory_optimization_02",
        BASE,
        {"GRPC_EXPERIMENTS": "memory_optimization_01,memory_optimization_02"},
    ),
    "exp-tcp": OptionSet(
        "GRPC_EXPERIMENTS=tcp_frame_size_tuning,tcp_rcv_lowat,free_large_allocator",
        BASE,
        {"GRPC_EXPERIMENTS": "tcp_frame_size_tuning,tcp_rcv_lowat,free_large_allocator"},
    ),
    "exp-ph2": OptionSet(
        "GRPC_EXPERIMENTS=ph2_server (promise HTTP/2 server)", BASE, {"GRPC_EXPERIMENTS": "ph2_server"}
    ),
    "app-no-channelz": OptionSet("app + enable_channelz=0", (*APP, ("grpc.enable_channelz", 0))),
    "lean": OptionSet("app + enable_channelz=0 + hpack tables 0", (*APP, ("grpc.enable_channelz", 0), *SMALL_HPACK)),
}


# ---- /proc and glibc ----


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon (bytes) and Threads of a process."""
    wanted = {"VmRSS": True, "VmHWM": True, "RssAnon": True, "Threads": False}
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in wanted:
                value = int(rest.split()[0])
                found[key] = value * 1024 if wanted[key] else value
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(name)


def malloc_info(libc: ctypes.CDLL | None) -> Json:
    """glibc heap: bytes obtained from the OS (sbrk + mmap), in use, and free but held."""
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return {
        "malloc_heap": int(info.arena + info.hblkhd),
        "malloc_used": int(info.uordblks + info.hblkhd),
        "malloc_free": int(info.fordblks),
    }


# ---- server child ----


class _Stream:
    """One open call's queue, as epsync's watchers and the load test's raw server keep one."""

    __slots__ = ("entries", "wakeup")

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.wakeup = asyncio.Event()

    def push(self, entry: bytes) -> None:
        self.entries.append(entry)
        self.wakeup.set()

    async def next(self) -> bytes:
        while not self.entries:
            self.wakeup.clear()
            await self.wakeup.wait()
        return self.entries.pop(0)


class BenchServer:
    def __init__(self, options: Sequence[GrpcOption], parse_requests: bool) -> None:
        self.options = list(options)
        self.parse_requests = parse_requests
        self.streams: set[_Stream] = set()
        self.opened = 0
        self.libc = _libc()
        self.server: grpc.aio.Server | None = None

    async def watch(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
        # Not kept here; grpc.aio itself holds the request until the call ends (see --request-bytes).
        del request
        stream = _Stream()
        stream.push(b"open")
        self.streams.add(stream)
        self.opened += 1
        try:
            while True:
                yield await stream.next()
        finally:
            self.streams.discard(stream)

    async def start(self) -> int:
        server = grpc.aio.server(options=self.options)
        # With --parse-requests the request "deserializes" to a small object, so only what a handler
        # keeps of its request stays alive with the call, not the request's bytes.
        parse = (lambda raw: raw[:16]) if self.parse_requests else None
        handler = grpc.unary_stream_rpc_method_handler(self.watch, request_deserializer=parse, response_serializer=None)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server
        return port

    def stats(self, collect: bool) -> Json:
        if collect:
            gc.collect()
        stats: Json = {
            "streams": len(self.streams),
            "opened": self.opened,
            "tasks": len(asyncio.all_tasks()),
            "gc_objects": len(gc.get_objects()),
            **proc_status(),
            **malloc_info(self.libc),
        }
        if tracemalloc.is_tracing():
            stats["py_traced"] = tracemalloc.get_traced_memory()[0]
        return stats

    def top_allocations(self, limit: int) -> list[str]:
        if not tracemalloc.is_tracing():
            return []
        snapshot = tracemalloc.take_snapshot()
        return [str(s) for s in snapshot.statistics("lineno")[:limit]]

    async def handle(self, command: Json) -> Json:
        cmd = command["cmd"]
        if cmd == "stats":
            return self.stats(bool(command.get("gc", True)))
        if cmd == "push":
            payload = bytes(int(command["bytes"]))
            for _ in range(int(command["count"])):
                for stream in self.streams:
                    stream.push(payload)
            return {"pushed": len(self.streams) * int(command["count"])}
        if cmd == "top":
            return {"top": self.top_allocations(int(command.get("limit", 15)))}
        if cmd == "trim":
            if self.libc is not None:
                self.libc.malloc_trim(0)
            return self.stats(True)
        if cmd == "stop":
            if self.server is not None:
                await self.server.stop(0)
            return {"stopped": True}
        raise ValueError(f"unknown command {cmd!r}")


async def _commands(handle: Callable[[Json], Awaitable[Json]], first: Json) -> None:
    """Write `first`, then answer each JSON line on stdin with one JSON line on stdout until EOF or stop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps(first), flush=True)
    while line := await reader.readline():
        command = json.loads(line)
        answer = await handle(command)
        print(json.dumps(answer), flush=True)
        if command["cmd"] == "stop":
            return


async def _run_server(set_name: str, trace: bool, parse_requests: bool) -> None:
    if trace:
        tracemalloc.start(8)
    server = BenchServer(OPTION_SETS[set_name].options, parse_requests)
    port = await server.start()
    try:
        await _commands(server.handle, {"port": port, "pid": os.getpid()})
    finally:  # also when the driver went away (EOF on stdin)
        if server.server is not None:
            await server.server.stop(0)


# ---- client child ----


class BenchClient:
    def __init__(self, port: int, connections: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.connections = connections
        self.received = 0
        self.opened = 0
        self.failed = 0
        self.retries = 0
        self.dropped = 0
        self.error: str | None = None
        self.changed = asyncio.Event()
        self.channels: list[grpc.aio.Channel | None] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def _one(self, index: int, opening: asyncio.Semaphore, stream: bool) -> None:
        """One connection and its stream, reopened (after a short pause) if the server cancels it while opening."""
        options = [("grpc.use_local_subchannel_pool", 1)]
        if not stream:  # the connection alone, no call on it
            async with opening:
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
                self.channels[index] = channel
                await channel.channel_ready()
            self.opened += 1
            self.changed.set()
            return
        async with opening:
            for attempt in range(5):
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=options)
                self.channels[index] = channel
                call = channel.unary_stream(FULL_METHOD, request_serializer=None, response_deserializer=None)(
                    self.request, wait_for_ready=True
                )
                try:
                    if isinstance(await call.read(), bytes):
                        break
                    self.error = "stream ended before its first message"
                except grpc.aio.AioRpcError as error:
                    self.error = f"{error.code().name}: {error.details()}"
                self.retries += 1
                await channel.close(grace=None)
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                self.failed += 1
                self.changed.set()
                return
        self.opened += 1
        self.received += 1
        self.changed.set()
        try:
            while isinstance(await call.read(), bytes):  # read() and async iteration do not mix
                self.received += 1
                self.changed.set()
        except grpc.aio.AioRpcError as error:
            self.error = f"{error.code().name}: {error.details()}"
            self.dropped += 1

    async def _until(self, done: Callable[[], bool], seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()

    async def handle(self, command: Json) -> Json:
        cmd = command["cmd"]
        if cmd == "open":
            started = time.perf_counter()
            opening = asyncio.Semaphore(int(command["concurrency"]))
            self.channels = [None] * self.connections
            self.tasks = [
                asyncio.create_task(self._one(i, opening, bool(command["streams"]))) for i in range(self.connections)
            ]
            await self._until(lambda: self.opened + self.failed >= self.connections, float(command["seconds"]))
            return {
                "opened": self.opened,
                "failed": self.failed,
                "retries": self.retries,
                "error": self.error,
                "seconds": time.perf_counter() - started,
            }
        if cmd == "wait":  # until `total` messages arrived over all this client's streams
            total = int(command["total"])
            await self._until(lambda: self.received >= total, float(command["seconds"]))
            return {"received": self.received, "done": self.received >= total, "dropped": self.dropped}
        if cmd == "stop":
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.gather(*(c.close(grace=None) for c in self.channels if c is not None), return_exceptions=True)
            return {"stopped": True}
        raise ValueError(f"unknown command {cmd!r}")


async def _run_client(port: int, connections: int, request_bytes: int) -> None:
    client = BenchClient(port, connections, bytes(request_bytes))
    await _commands(client.handle, {"pid": os.getpid()})


# ---- the driver ----


class Child:
    """A child process running this module, spoken to in JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(
        cls, args: Sequence[str], env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> tuple[Child, Json]:
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "bench.bench_connections",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={"GRPC_VERBOSITY": "ERROR", **os.environ, **python_env(), **(env or {})},
            limit=1 << 20,
        )
        child = cls(proc)
        try:
            async with asyncio.timeout(30):
                hello = await child.read()
        except BaseException:
            await child.close()
            raise
        return child, hello

    async def read(self) -> Json:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child {self.proc.pid} exited ({await self.proc.wait()})")
            if line.startswith(b"{"):  # anything else is a wrapper's chatter (--server-prefix)
                answer: Json = json.loads(line)
                return answer

    async def ask(self, command: Json) -> Json:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        return await self.read()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self.ask({"cmd": "stop"})
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()


async def _ask_all(children: Sequence[Child], commands: Sequence[Json], seconds: float) -> list[Json]:
    async with asyncio.timeout(seconds):
        return list(await asyncio.gather(*(c.ask(command) for c, command in zip(children, commands, strict=True))))


def _mib(value: float) -> float:
    return round(value / MiB, 1)


def _kib(value: float) -> float:
    return round(value / KiB, 1)


def _pin(pid: int, cpus: Sequence[int]) -> None:
    """Pin every thread of a process (gRPC starts its own) to `cpus`."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), cpus)


async def _settle(server: Child, seconds: float) -> Json:
    await asyncio.sleep(seconds)
    async with asyncio.timeout(30):
        return await server.ask({"cmd": "stats"})


async def _deliver(
    server: Child, clients: Sequence[Child], shares: Sequence[int], push: Json, expected: list[int], seconds: float
) -> float:
    """Push `push["count"]` messages to every stream; return seconds until every client had them all."""
    started = time.perf_counter()
    async with asyncio.timeout(30):
        await server.ask(push)
    for i, share in enumerate(shares):
        expected[i] += int(push["count"]) * share
    answers = await _ask_all(
        clients, [{"cmd": "wait", "total": total, "seconds": seconds} for total in expected], seconds + 5
    )
    elapsed = time.perf_counter() - started
    if not all(a["done"] for a in answers):
        raise RuntimeError(f"messages missing after {seconds}s: {answers}")
    return elapsed


async def measure(name: str, args: argparse.Namespace) -> Json:
    option_set = OPTION_SETS[name]
    children: list[Child] = []
    try:
        server, hello = await Child.start(
            [
                *("--role", "server", "--set", name),
                *(["--tracemalloc"] if args.tracemalloc else []),
                *(["--parse-requests"] if args.parse_requests else []),
            ],
            option_set.env,
            shlex.split(args.server_prefix),
        )
        children.append(server)
        port, pid = int(hello["port"]), int(hello["pid"])
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin and len(cpus) > 1:  # the server alone on one CPU, the clients on the others
            _pin(pid, cpus[:1])
        idle = await _settle(server, 0.5)

        n, m = args.connections, args.clients
        shares = [n // m + (1 if i < n % m else 0) for i in range(m)]
        clients: list[Child] = []
        for share in shares:
            role = ["--role", "client", "--port", str(port), "--connections", str(share)]
            client, _ = await Child.start([*role, "--request-bytes", str(args.request_bytes)])
            clients.append(client)
            children.append(client)
            if args.pin and len(cpus) > 1:
                _pin(client.proc.pid, cpus[1:])
        started = time.perf_counter()
        command = {
            "cmd": "open",
            "seconds": args.timeout,
            "concurrency": args.open_concurrency,
            "streams": args.streams,
        }
        opened = await _ask_all(clients, [command] * m, args.timeout + 5)
        open_seconds = time.perf_counter() - started
        if sum(o["opened"] for o in opened) != n:
            raise RuntimeError(f"only {opened} of {n} connections opened")
        stages: dict[str, Json] = {"idle": idle, "open": await _settle(server, 1.0)}

        rates: list[float] = []
        cpu_per_message: list[float] = []
        if args.streams:
            expected = list(shares)  # the "open" message each stream got
            push = {"cmd": "push", "count": args.messages, "bytes": args.message_bytes}
            await _deliver(server, clients, shares, push, expected, args.timeout)
            stages["messages"] = await _settle(server, 0.5)
            for _ in range(args.burst_rounds):
                cpu0 = cpu_seconds(pid)
                push = {"cmd": "push", "count": args.burst, "bytes": args.message_bytes}
                seconds = await _deliver(server, clients, shares, push, expected, args.timeout)
                rates.append(args.burst * n / seconds)
                cpu_per_message.append((cpu_seconds(pid) - cpu0) / (args.burst * n))
            stages["burst"] = await _settle(server, 0.5)
        async with asyncio.timeout(60):
            top = (await server.ask({"cmd": "top", "limit": 12}))["top"] if args.tracemalloc else []
            stages["trimmed"] = await server.ask({"cmd": "trim"})

        def per_conn(stage: str, key: str = "VmRSS") -> float | None:
            if stage not in stages or key not in stages[stage]:
                return None
            return _kib((stages[stage][key] - idle[key]) / n)

        last = stages.get("burst", stages["open"])
        row: Json = {
            "set": name,
            "description": option_set.description,
            "options": [list(o) for o in option_set.options],
            "env": dict(option_set.env),
            "connections": n,
            "streams": args.streams,
            "open_s": round(open_seconds, 2),
            "open_retries": sum(o["retries"] for o in opened),
            "idle_rss_mib": _mib(idle["VmRSS"]),
            "open_rss_mib": _mib(stages["open"]["VmRSS"]),
            "peak_rss_mib": _mib(last["VmHWM"]),
            "open_kib_per_conn": per_conn("open"),
            "msgs_kib_per_conn": per_conn("messages"),
            "burst_kib_per_conn": per_conn("burst"),
            "trimmed_kib_per_conn": per_conn("trimmed"),
            "malloc_kib_per_conn": per_conn("open", "malloc_used"),
            "burst_malloc_kib_per_conn": per_conn("burst", "malloc_used"),
            "msgs_per_s": round(statistics.median(rates)) if rates else None,
            "msgs_per_s_all": [round(r) for r in rates],
            "server_cpu_us_per_msg": round(statistics.median(cpu_per_message) * 1e6, 1) if cpu_per_message else None,
            "threads": last["Threads"],
            "tasks_per_conn": round((stages["open"]["tasks"] - idle["tasks"]) / n, 2),
            "gc_objects_per_conn": round((stages["open"]["gc_objects"] - idle["gc_objects"]) / n, 1),
        }
        if "py_traced" in idle:
            row["py_kib_per_conn"] = per_conn("open", "py_traced")
            row["burst_py_kib_per_conn"] = per_conn("burst", "py_traced")
            row["top_allocations"] = top
        row["stages"] = stages
        return row
    finally:
        # Clients first, so the server is not left cancelling thousands of calls at once.
        await asyncio.gather(*(c.close() for c in children[1:]), return_exceptions=True)
        if children:
            await children[0].close()


COLUMNS = (
    "set",
    "idle_rss_mib",
    "open_rss_mib",
    "open_kib_per_conn",
    "msgs_kib_per_conn",
    "burst_kib_per_conn",
    "trimmed_kib_per_conn",
    "malloc_kib_per_conn",
    "msgs_per_s",
    "server_cpu_us_per_msg",
)


def _print_table(rows: Sequence[Json], columns: Sequence[str]) -> None:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)), flush=True)


async def _drive(args: argparse.Namespace) -> list[Json]:
    names = args.options.split(",")
    for name in names:
        if name not in OPTION_SETS:
            raise SystemExit(f"unknown option set {name!r}; known: {', '.join(OPTION_SETS)}")
    rows: list[Json] = []
    for repeat in range(args.repeat):  # repeats interleave, so drift on the machine hits every set alike
        for name in names:
            started = time.perf_counter()
            try:
                row = await asyncio.wait_for(measure(name, args), args.timeout * 3)
            except (RuntimeError, TimeoutError) as error:
                print(f"{name}: failed: {error}", file=sys.stderr)
                continue
            row["repeat"] = repeat
            row["run_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            _print_table([row], COLUMNS)
    return rows


def summarize(rows: Sequence[Json]) -> list[Json]:
    """One row per option set: the median of each column over its repeats."""
    summary: list[Json] = []
    for name in dict.fromkeys(r["set"] for r in rows):
        runs = [r for r in rows if r["set"] == name]
        merged: Json = {"set": name, "runs": len(runs)}
        for column in COLUMNS[1:]:
            values = [r[column] for r in runs if r.get(column) is not None]
            middle = statistics.median(values) if values else None
            merged[column] = None if middle is None else round(middle) if abs(middle) >= 1000 else round(middle, 1)
        summary.append(merged)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=2200, help="client connections, one stream each")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--options", default="default,app,lean", help=f"option sets: {','.join(OPTION_SETS)}")
    parser.add_argument("--messages", type=int, default=10, help="small messages pushed to each stream")
    parser.add_argument("--message-bytes", type=int, default=200)
    parser.add_argument(
        "--parse-requests",
        action="store_true",
        help="the server turns each request into a 16-byte object (as a parser keeping little would)",
    )
    parser.add_argument(
        "--request-bytes", type=int, default=0, help="size of each stream's request (a resume with known versions)"
    )
    parser.add_argument("--burst", type=int, default=10, help="messages per stream in each throughput burst")
    parser.add_argument("--open-concurrency", type=int, default=32, help="connections each client opens at once")
    parser.add_argument("--burst-rounds", type=int, default=3, help="throughput bursts; the median is reported")
    parser.add_argument("--no-streams", dest="streams", action="store_false", help="connections only, no call on them")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the scheduler place processes (by default the server gets the first CPU to itself and the "
        "clients share the others, which makes messages/s far less noisy)",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tracemalloc", action="store_true", help="trace the server's Python allocations")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds for any one stage")
    parser.add_argument("--out", type=Path, default=RESULTS / "connections.json")
    parser.add_argument("--server-prefix", default="", help="run the server under this, e.g. 'heaptrack -o /tmp/srv'")
    # Children of this file.
    parser.add_argument("--role", choices=("driver", "server", "client"), default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--set", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role == "server":
        asyncio.run(_run_server(args.set, args.tracemalloc, args.parse_requests))
        return
    if args.role == "client":
        asyncio.run(_run_client(args.port, args.connections, args.request_bytes))
        return

    rows = asyncio.run(_drive(args))
    summary = summarize(rows)
    print()
    _print_table(summary, ("set", "runs", *COLUMNS[1:]) if args.repeat > 1 else COLUMNS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "connections",
        "machine": {"python": sys.version.split()[0], "grpcio": grpc.__version__, "cpus": os.cpu_count()},
        "parameters": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("role", "set", "port")
        },
        "summary": summary,
        "results": rows,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
