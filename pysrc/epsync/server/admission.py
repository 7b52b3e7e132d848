"""How many watch streams a server process holds, in all and per identity (SPEC §8 limits).

A watch stream costs the server a connection's share of memory, a place in its group's fan-out and a
task; one client opening thousands of them would starve everyone else. Past `--max-watchers` (in all)
or `--max-watchers-per-identity` (per client certificate's identity, with mutual TLS) a new watch is
RESOURCE_EXHAUSTED with reason TOO_MANY_WATCHERS and a RetryInfo: a client backs off and retries, here
or on another replica. Each serving process (`--workers`) counts its own streams.
"""

from __future__ import annotations

from epsync.errors import ResourceExhausted
from epsync.server.identity import Identity

# What a refused client is told to wait before it retries.
RETRY_AFTER_SECONDS = 5.0


class WatcherBudget:
    def __init__(self, total: int, per_identity: int) -> None:
        self.total = total
        self.per_identity = per_identity
        self.count = 0
        self._by_identity: dict[Identity, int] = {}

    def acquire(self, identity: Identity | None) -> None:
        """Take a place for a new watch stream of `identity` (None: callers are not identified), or raise
        ResourceExhausted TOO_MANY_WATCHERS."""
        if self.count >= self.total:
            raise ResourceExhausted(
                f"this server process holds {self.total:,} watch streams, its limit (--max-watchers); retry "
                "later or on another replica",
                reason="TOO_MANY_WATCHERS",
                metadata={"limit": str(self.total), "scope": "server"},
                retry_after=RETRY_AFTER_SECONDS,
            )
        if identity is not None:
            held = self._by_identity.get(identity, 0)
            if held >= self.per_identity:
                raise ResourceExhausted(
                    f"{identity} holds {held:,} watch streams on this server process, the limit for one identity "
                    "(--max-watchers-per-identity); close some, or retry later",
                    reason="TOO_MANY_WATCHERS",
                    metadata={"limit": str(self.per_identity), "scope": "identity", "identity": str(identity)},
                    retry_after=RETRY_AFTER_SECONDS,
                )
            self._by_identity[identity] = held + 1
        self.count += 1

    def release(self, identity: Identity | None) -> None:
        self.count -= 1
        if identity is not None:
            left = self._by_identity[identity] - 1
            if left:
                self._by_identity[identity] = left
            else:
                del self._by_identity[identity]
