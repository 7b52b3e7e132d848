"""The change feed's shared parts: what every datastore and the cache it feeds do the same way.

`RevisionWaiters` is "wait until revision R has been delivered": a writer waiting for its own
write to reach the listeners, a read waiting for `min_resource_version`. Whoever advances the
revision calls `advance`, on the event loop thread; waiters are woken in that same call.
"""

from __future__ import annotations

import asyncio


class RevisionNotReached(Exception):
    """`wait` gave up: the revision did not arrive in time. `current` is where the waited-on thing is."""

    def __init__(self, wanted: int, current: int, within_seconds: float) -> None:
        self.wanted = wanted
        self.current = current
        self.within_seconds = within_seconds
        super().__init__(f"at revision {current}, not {wanted}, after {within_seconds:g}s")


class RevisionWaiters:
    """Futures waiting for a revision, woken when `advance` reaches it."""

    def __init__(self, revision: int = 0) -> None:
        self.revision = revision
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def advance(self, revision: int) -> None:
        """The revision has reached `revision` (it never goes back): wake everyone waiting for it or less."""
        if revision <= self.revision:
            return
        self.revision = revision
        if not self._waiting:
            return
        still_waiting = []
        for wanted, waiter in self._waiting:
            if waiter.done():  # its caller gave up or was cancelled
                continue
            if wanted <= revision:
                waiter.set_result(None)
            else:
                still_waiting.append((wanted, waiter))
        self._waiting = still_waiting

    def reset(self, revision: int) -> None:
        """Start again from `revision` (a new snapshot): may go back; waiters wait on."""
        self.revision = revision

    async def wait(self, revision: int, within_seconds: float | None = None) -> None:
        """Return once `revision` has been reached; RevisionNotReached after `within_seconds` (None: no limit)."""
        if self.revision >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((revision, waiter))
        if within_seconds is None:
            await waiter
            return
        try:
            await asyncio.wait_for(waiter, within_seconds)
        except TimeoutError:
            raise RevisionNotReached(revision, self.revision, within_seconds) from None
