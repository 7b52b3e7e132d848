"""What a serving process lets a caller have (SPEC §8 limits): watch streams in all and per identity
(`WatcherBudget`), and calls per second per identity (`RateLimiter`).

A watch stream costs the server a connection's share of memory, a place in its group's fan-out and a
task; one client opening thousands of them would starve everyone else. Past `--max-watchers` (in all)
or `--max-watchers-per-identity` (per client certificate's identity, with mutual TLS) a new watch is
RESOURCE_EXHAUSTED with reason TOO_MANY_WATCHERS and a RetryInfo: a client backs off and retries, here
or on another replica. Each serving process (`--workers`) counts its own streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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


class RateLimiter:
    """Requests per second per identity, as token buckets: each identity may make `burst` calls at once and
    `rate` a second after that. Past it a call is RESOURCE_EXHAUSTED with reason RATE_LIMITED and a RetryInfo
    saying when the next token comes. Applied to identified callers only (mutual TLS): without identities every
    caller would share one bucket, and one busy client would throttle all."""

    MAX_TRACKED = 100_000  # identities with a bucket; past it the fullest buckets are forgotten

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[Identity, tuple[float, float]] = {}  # identity -> (tokens, when counted)

    def take(self, identity: Identity) -> None:
        """Take a token for one call of `identity`, or raise ResourceExhausted RATE_LIMITED."""
        now = self._clock()
        tokens, then = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1 - 1e-9:  # a client back after exactly the wait it was told is served
            self._buckets[identity] = (tokens, now)
            wait = (1 - tokens) / self.rate
            raise ResourceExhausted(
                f"{identity} makes more than {self.rate:,.0f} calls a second (bursts of {self.burst:,.0f}), "
                f"its limit (--rate-limit); retry in {wait:.2f} s",
                reason="RATE_LIMITED",
                metadata={"limit": f"{self.rate:g}", "identity": str(identity)},
                retry_after=wait,
            )
        if len(self._buckets) >= self.MAX_TRACKED and identity not in self._buckets:
            self._buckets.clear()  # every forgotten identity starts again with a full bucket
        self._buckets[identity] = (tokens - 1, now)
