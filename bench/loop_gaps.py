"""How long a piece of asyncio code holds the event loop at a time, seen from beside it.

A task that only yields notes the time between its turns; the longest gap while the measured code
runs is the longest any other client of the same loop would have waited. Used by the benchmarks
that bound one request's stall (bench_stall, bench_resume_history).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class LoopGaps:
    """The gaps between the turns of a task that only yields; `longest` once the measurement has ended."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._running = True

    @property
    def longest(self) -> float:
        return max(self.gaps, default=0.0)

    async def _beside(self) -> None:
        last = time.perf_counter()
        while self._running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now


@asynccontextmanager
async def loop_gaps() -> AsyncIterator[LoopGaps]:
    """`async with loop_gaps() as gaps:` run the code to measure inside; `gaps.longest` after the block."""
    gaps = LoopGaps()
    task = asyncio.create_task(gaps._beside())
    await asyncio.sleep(0)  # the task has started its clock
    try:
        yield gaps
    finally:
        gaps._running = False
        await task
