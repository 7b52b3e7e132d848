"""The run's one status line on stderr: redrawn in place on a terminal, printed every few seconds otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable


class Progress:
    """One status line on stderr, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self._last_print = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + text.ljust(self._width))
            self._width = len(text)
            sys.stderr.flush()
        elif time.monotonic() - self._last_print >= 5:
            self._last_print = time.monotonic()
            print(text, file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * self._width + "\r")
            self._width = 0
        print(text, file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def ticking(self, label: str, seconds: float, status: Callable[[], str]) -> AsyncIterator[None]:
        """Redraw `label [bar] elapsed/total status` every half second while the block runs."""
        started = time.monotonic()

        async def loop() -> None:
            while True:
                elapsed = time.monotonic() - started
                filled = min(20, int(20 * elapsed / seconds)) if seconds > 0 else 20
                self.show(f"{label} [{'#' * filled}{'.' * (20 - filled)}] {elapsed:4.0f}/{seconds:.0f}s {status()}")
                await asyncio.sleep(0.5)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
