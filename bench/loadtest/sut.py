"""The systems under test, each its own process: an epsync server, an etcd member, and sampling of both.

Both are started on free loopback ports with their data in the run's temporary directory, die with
the orchestrator (PR_SET_PDEATHSIG), and are stopped in its `finally`. `Sampler` reads a process's
CPU time and resident memory from /proc a few times a second, for the time series and the peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.loadtest import procstat
from bench.loadtest.control import die_with_parent

# The repository's root, where `bench` is a top-level package: helper processes run `python -m bench.loadtest.<module>`.
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Tries at starting a server on ports from `free_port()` before giving up (each loses a race rarely).
_PORT_ATTEMPTS = 3


class ServerProcess:
    """A process listening on `target`; `stop()` terminates it (then kills it) and reaps it."""

    name = "server"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def _spawn(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=die_with_parent
            )

    async def _launch(self, argv: Callable[[], list[str]], within: float, fresh_ports: Callable[[], None]) -> None:
        """Spawn `argv()` and wait until ready. Ports come from `free_port()`, which another process may take
        before this one binds them: when that happens on a first start, `fresh_ports()` and try again."""
        for attempt in range(_PORT_ATTEMPTS):
            first_start = not self.port
            fresh_ports()
            await self._spawn(argv())
            try:
                await self._wait_ready(within)
                return
            except RuntimeError as error:
                if not (first_start and "address already in use" in str(error) and attempt + 1 < _PORT_ATTEMPTS):
                    raise
                await self.stop()
                self.port = 0

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while not await self._ready():
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {within:.0f} s: {self.log_tail()}")
            await asyncio.sleep(0.1)

    async def _ready(self) -> bool:
        raise NotImplementedError

    async def stop(self, grace: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        for action in (process.terminate, process.kill):
            if process.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                action()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await process.wait()
        await process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class EpsyncProcess(ServerProcess):
    """`python -m epsync serve` on a free port, with its store in `data_dir` (or `extra_args`' datastore)."""

    name = "epsync"

    def __init__(self, data_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(log_path)
        self.data_dir = data_dir
        self.extra_args = extra_args

    async def start(self, within: float = 120.0) -> None:
        def argv() -> list[str]:
            return [
                sys.executable,
                "-m",
                "epsync",
                "serve",
                "--listen",
                self.target,
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "WARNING",
                "--grace",
                "1",
                *self.extra_args,
            ]

        def fresh_ports() -> None:
            self.port = self.port or free_port()

        await self._launch(argv, within, fresh_ports)

    async def _ready(self) -> bool:
        async with grpc.aio.insecure_channel(self.target) as channel:
            try:
                response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def etcd_binary(explicit: str | None = None) -> str:
    """--etcd-binary, else `.tools/bin/etcd` (what `make etcd` installs) here, in a parent directory or in this
    repository, else PATH."""
    if explicit:
        return explicit
    here = Path.cwd().resolve()
    for directory in (here, *here.parents, REPO_ROOT):
        candidate = directory / ".tools" / "bin" / "etcd"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("etcd")
    if found is None:
        raise RuntimeError("etcd is not installed: run `make etcd`, or pass --etcd-binary")
    return found


class EtcdProcess(ServerProcess):
    """One etcd member on free loopback ports."""

    name = "etcd"

    def __init__(self, binary: str, data_dir: Path, log_path: Path) -> None:
        super().__init__(log_path)
        self.binary = binary
        self.data_dir = data_dir
        self.peer_port = 0

    async def start(self, within: float = 60.0) -> None:
        def argv() -> list[str]:
            url, peer = f"http://{self.target}", f"http://127.0.0.1:{self.peer_port}"
            return [
                self.binary,
                "--name=epsync-bench",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={url}",
                f"--advertise-client-urls={url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=epsync-bench={peer}",
                "--quota-backend-bytes=8589934592",  # the run writes many revisions; never hit the 2 GiB default
                "--logger=zap",
                "--log-level=warn",
            ]

        def fresh_ports() -> None:
            if not self.port:
                self.port, self.peer_port = free_port(), free_port()

        await self._launch(argv, within, fresh_ports)

    async def _ready(self) -> bool:
        def check() -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.target}/health", timeout=1) as response:
                    return b'"health":"true"' in response.read()
            except OSError:
                return False

        return await asyncio.to_thread(check)


@dataclass
class Sampler:
    """Samples a process's CPU and memory from /proc every `interval` seconds while running."""

    pid: int
    interval: float = 0.25
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (unix time, cpu s, rss bytes)
    others: tuple[int, ...] = ()  # more processes of one system (replicas and their etcd): summed with `pid`
    # Each process's children are summed too: the workers of `epsync serve --workers N`.
    # `pid`'s own threads at each sample: (unix time, its own CPU seconds, procstat.thread_cpu_seconds).
    thread_samples: list[tuple[float, float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                tops = [procstat.sample(pid) for pid in (self.pid, *self.others)]  # OSError: the system ended
                workers = [
                    procstat.sample_if_running(c) for top in (self.pid, *self.others) for c in procstat.children(top)
                ]
                samples = [*tops, *(w for w in workers if w is not None)]
                cpu, rss = sum(s.cpu_seconds for s in samples), sum(s.rss_bytes for s in samples)
                now = time.time()
                self.samples.append((now, cpu, rss))
                self.thread_samples.append((now, tops[0].cpu_seconds, procstat.thread_cpu_seconds(self.pid)))
                await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def rss_mb_now(self) -> float:
        """The latest sample's RSS (MiB), 0 before the first."""
        return self.samples[-1][2] / 2**20 if self.samples else 0.0

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU used (cores, on average) and peak RSS between two unix times."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {"cpu_cores": 0.0, "peak_rss_mb": inside[0][2] / 2**20 if inside else 0.0}
        return {
            "cpu_cores": (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]),
            "peak_rss_mb": max(s[2] for s in inside) / 2**20,
        }

    def threads_window(self, start: float, end: float) -> dict[str, float]:
        """The first process's CPU between two unix times by thread name (cores, on average; see
        `procstat.cpu_by_thread_name`), busiest first; empty with fewer than two samples."""
        inside = [s for s in self.thread_samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}
        (t0, cpu0, before), (t1, cpu1, after) = inside[0], inside[-1]
        seconds = procstat.cpu_by_thread_name(before, after, cpu1 - cpu0)
        return {name: cpu / (t1 - t0) for name, cpu in sorted(seconds.items(), key=lambda item: -item[1])}


def python_env() -> dict[str, str]:
    """The environment for helper processes: this interpreter (so this epsync), and `bench` importable from any cwd."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{path}" if path else str(REPO_ROOT)}
