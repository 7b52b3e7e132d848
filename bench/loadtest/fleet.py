"""The watcher agents of a run: several processes, the watchers dealt out among them, their reports merged.

Every agent process reports once a second (`agents.Stats`); `Fleet` keeps every report with the
time it covers, so a scenario can ask afterwards for any window: latency histograms merged exactly
over all processes and watchers (per watcher class), events and bytes delivered, and the agents'
own CPU use (to show when they, not the server, were the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadtest import procstat
from bench.loadtest.control import Child, Message
from bench.loadtest.histogram import Histogram
from bench.loadtest.sut import REPO_ROOT, python_env

GO_AGENTS = REPO_ROOT / "bench" / "agents"


@dataclass
class Window:
    """What the agents reported between two moments."""

    seconds: float
    events: int = 0
    live_events: int = 0
    bytes: int = 0
    responses: int = 0
    latency: dict[str, Histogram] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    agent_cores: float = 0.0  # CPU the agent processes used, in cores (1.0 = one core busy)

    def merged(self, classes: Sequence[str] | None = None) -> Histogram:
        out = Histogram()
        for cls, histogram in self.latency.items():
            if classes is None or cls in classes:
                out.merge(histogram)
        return out

    @property
    def events_per_second(self) -> float:
        return self.live_events / self.seconds if self.seconds > 0 else 0.0


async def build_go_agents(out: Path) -> Path:
    """Build the Go agents (bench/agents) into `out`; Go's build cache makes a rebuild take a second."""
    binary = out / "epsync-bench-agents"
    process = await asyncio.create_subprocess_exec(
        "go",
        "build",
        "-o",
        str(binary),
        ".",
        cwd=GO_AGENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"building the Go agents failed:\n{output.decode(errors='replace')}")
    return binary


class Fleet:
    """Agent processes in one mode (epsync, etcd or raw), all pointed at one target.

    `go_agents` is the built Go agent (`build_go_agents`): one process holds every watcher. Without
    it, `workers` Python processes (`bench.loadtest.agents`) share them.
    """

    def __init__(self, mode: str, target: str, workers: int, log_dir: Path, go_agents: Path | None = None) -> None:
        self.mode = mode
        self.target = target
        self.workers = 1 if go_agents else workers
        self.command = [str(go_agents)] if go_agents else [sys.executable, "-m", "bench.loadtest.agents"]
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.specs: list[Message] = []
        self.reports: list[Message] = []  # every tick, with "worker" added

    async def start(self, specs: Sequence[Message], *, within: float) -> Message:
        """Start the processes and their watchers; returns once every watcher is in sync."""
        self.specs = list(specs)
        for k in range(self.workers):
            child = await Child.start(
                f"{self.mode}-agents-{k}",
                [*self.command, "--mode", self.mode, "--target", self.target],
                self.log_dir,
                python_env(),
            )
            child.on_report = self._on_report
            self.children.append(child)
        return await self._all("start", within=within, per_child=lambda k: {"watchers": self.specs[k :: self.workers]})

    def _on_report(self, child: Child, message: Message) -> None:
        if message.get("type") == "tick":
            message["worker"] = child.name
            self.reports.append(message)

    async def _all(self, cmd: str, *, within: float, per_child: Any = None, **params: Any) -> Message:
        """Send a command to every process at once; merge the answers (their "sync" maps, their "views")."""
        replies = await asyncio.gather(
            *(
                child.call(cmd, within=within + 5, timeout=within, **params, **(per_child(k) if per_child else {}))
                for k, child in enumerate(self.children)
            )
        )
        merged: Message = {"seconds": max((r.get("seconds", 0.0) for r in replies), default=0.0)}
        for key in ("sync", "views", "watchers"):
            if any(key in r for r in replies):
                merged[key] = {int(i): v for r in replies for i, v in r.get(key, {}).items()}
        return merged

    def cpu_seconds(self) -> float:
        """CPU seconds the agent processes (and any children of theirs) have used so far, read from /proc as
        the server's are: their own once-a-second reports are too coarse for a storm of about a second."""
        return sum(procstat.tree_cpu_seconds(child.pid) for child in self.children)

    async def drop(self, ids: Sequence[int] | None = None) -> None:
        await self._all("drop", within=60, ids=None if ids is None else list(ids))

    async def reconnect(
        self, *, fresh: bool, within: float, target: str | None = None, ids: Sequence[int] | None = None
    ) -> Message:
        """Reconnect the watchers (all, or `ids`) at once; returns once they are all in sync again."""
        if target:
            self.target = target
        ids_param = None if ids is None else list(ids)
        return await self._all("reconnect", within=within, fresh=fresh, target=self.target, ids=ids_param)

    async def stall(self, ids: Sequence[int]) -> None:
        await self._all("stall", within=30, ids=list(ids))

    async def unstall(self) -> None:
        await self._all("unstall", within=30)

    async def views(self) -> dict[int, dict[str, int]]:
        reply = await self._all("views", within=120)
        return dict(reply["views"])

    async def counters(self) -> dict[int, Message]:
        return dict((await self._all("counters", within=30))["watchers"])

    def window(self, start: float, end: float) -> Window:
        """Merge the reports whose second ended within [start, end] (unix times)."""
        out = Window(seconds=max(end - start, 1e-9))
        cpu: dict[str, list[tuple[float, float]]] = {}
        for report in self.reports:
            if not start < report["t"] <= end:
                continue
            out.events += report["events"]
            out.live_events += report["live_events"]
            out.bytes += report["bytes"]
            out.responses += report["responses"]
            for cls, data in report["latency"].items():
                out.latency.setdefault(cls, Histogram()).merge(Histogram.from_json(data))
            for what, count in report["errors"].items():
                out.errors[what] = out.errors.get(what, 0) + count
            cpu.setdefault(report["worker"], []).append((report["t"], report["cpu"]))
        # Each process's CPU seconds over the seconds between its first and last report in the window.
        out.agent_cores = sum((v[-1][1] - v[0][1]) / (v[-1][0] - v[0][0]) for v in cpu.values() if len(v) > 1)
        return out

    def per_second(self, start: float, end: float, classes: Sequence[str] | None = None) -> list[dict[str, float]]:
        """One row per second: latency percentiles over the watchers (of `classes`), events delivered."""
        seconds: dict[int, Window] = {}
        for report in self.reports:
            if not start < report["t"] <= end:
                continue
            second = int(report["t"])
            window = seconds.setdefault(second, Window(seconds=1.0))
            window.live_events += report["live_events"]
            window.bytes += report["bytes"]
            for cls, data in report["latency"].items():
                window.latency.setdefault(cls, Histogram()).merge(Histogram.from_json(data))
        rows = []
        for second in sorted(seconds):
            merged = seconds[second].merged(classes)
            rows.append({"t": second - start, "events_per_second": seconds[second].live_events, **merged.summary_ms()})
        return rows

    async def stop(self) -> None:
        for child in self.children:
            with contextlib.suppress(Exception):  # already gone, or stuck: stop() below ends it either way
                await child.call("stop", within=20)
        await asyncio.gather(*(child.stop() for child in self.children))
        self.children.clear()
