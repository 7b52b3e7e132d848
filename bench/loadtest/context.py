"""What the orchestrator shares with the scenarios: the run's settings and watchers, each system, the check.

The orchestrator (`bench.loadtest.run`) starts a system under test with its writer and watcher
agents and hands it to the scenarios as a `System`; a scenario measures through it and records
rows in the run's `Outcome` (`bench.loadtest.results`). `Context.checked` is scenario 6, the
comparison of every watcher's view with the store; each scenario calls it where its own
measurement ends, since scenario 3 times its resume by it and scenario 4 checks the node watchers
before it reconnects the selector watchers. Everything started through `Context.later` is
stopped by the orchestrator at the end of each phase, whatever happened.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.loadtest.control import Child, Message
from bench.loadtest.fleet import Fleet
from bench.loadtest.options import Settings
from bench.loadtest.progress import Progress
from bench.loadtest.results import Outcome
from bench.loadtest.scenarios import s6_correctness
from bench.loadtest.sut import Sampler, ServerProcess
from bench.population import Membership

Stop = Callable[[], Awaitable[None]]


@dataclass
class System:
    """A running system under test, as the scenarios use it."""

    name: str  # as in the tables: "epsync", "etcd", "raw", "epsync x2 on etcd"
    fleet: Fleet  # the watcher agents connected to it
    sampler: Sampler  # its processes' CPU and memory
    drive: Callable[[float, float], Awaitable[Message]]  # offer `rate` writes/s for `duration` s
    store: Callable[[], Awaitable[s6_correctness.Store]]  # what every view must equal
    writer: Child | None = None  # the writer process (the raw server writes itself)
    server: ServerProcess | None = None


class Context:
    """The run's settings, watchers and results, and the means to stop what a phase started."""

    def __init__(
        self,
        settings: Settings,
        specs: list[Message],
        membership: Membership,
        tmp: Path,
        out: Outcome,
        progress: Progress,
    ) -> None:
        self.settings = settings
        self.specs = specs  # every watcher: node agents first, then selector watchers
        self.membership = membership
        self.tmp = tmp
        self.out = out
        self.progress = progress
        self._cleanup: list[Stop] = []

    def wants(self, scenario: int) -> bool:
        return scenario in self.settings.scenarios

    @property
    def node_specs(self) -> list[Message]:
        return [spec for spec in self.specs if "node" in spec]

    def later(self, stop: Stop) -> None:
        """Have `stop` called at the end of the phase (last registered, first called)."""
        self._cleanup.append(stop)

    async def stop_all(self) -> None:
        while self._cleanup:
            stop = self._cleanup.pop()
            with contextlib.suppress(Exception):  # the next stop runs whatever this one raised
                await stop()

    def sample(self, pid: int, others: tuple[int, ...] = (), *, rss_series: str | None = None) -> Sampler:
        """Sample processes' CPU and memory until the phase ends; `rss_series` names them in the RSS plot."""
        sampler = Sampler(pid, others=others)
        sampler.start()
        self.later(sampler.stop)
        if rss_series is not None:
            self.out.samplers.setdefault(rss_series, []).append(sampler)
        return sampler

    async def checked(self, scenario: str, system: System, specs: Sequence[Message] | None = None) -> None:
        """Scenario 6 after `scenario`: every view (of `specs`, default all of the fleet's) against the store."""
        if not self.wants(6):
            return
        chosen = system.fleet.specs if specs is None else specs
        result = await s6_correctness.check(
            scenario, system.name, system.store, system.fleet.views, chosen, self.membership
        )
        self.out.checks.append(result)
        if result.ok:
            self.progress.done(
                f"  correct: {system.name} after {scenario}: {result.watchers:,} views, "
                f"{result.keys:,} keys equal the store"
            )
        else:
            self.progress.done(
                f"  CORRECTNESS FAILURE: {system.name} after {scenario}:\n    " + "\n    ".join(result.differences)
            )

    @staticmethod
    def status(fleet: Fleet) -> Callable[[], str]:
        """The status line's tail while a fleet is measured: the last two seconds' events, p99 and agents' CPU."""

        def status() -> str:
            if not fleet.reports:
                return ""
            now = time.time()
            w = fleet.window(now - 2.05, now)
            p99 = w.merged().percentile(99) / 1000
            return f"events {w.live_events / 2:,.0f}/s p99 {p99:,.1f} ms agents {w.agent_cores:.2f} cores"

        return status
