"""One watcher's bounded buffer of pre-encoded events, and the responses it is sent in.

The hub pushes events into a watcher synchronously, as each committed batch is published, so
writers and other watchers never wait for a slow one. The watcher's stream task drains the
buffer, coalescing everything queued into as few responses as the message limit allows, which
is how a watcher that falls behind catches up with fewer, larger messages. The buffer is
bounded in events and bytes, checked at revision boundaries (one revision is never cut, however
large); past the bound the buffer is dropped and the stream ends with WATCHER_TOO_SLOW, and the
client resumes from the last revision it received completely.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections import deque
from dataclasses import dataclass

from epsync.errors import EpsyncError, ResourceExhausted
from epsync.sync.wire import join_response

# Watch streams this process cut off, by the reason they were given (WATCHER_TOO_SLOW); read by the metrics.
CUT_OFFS: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True, slots=True)
class WatcherLimits:
    max_events: int = 10_000
    max_bytes: int = 64 * 1024 * 1024
    max_message_bytes: int = 16 * 1024 * 1024


@dataclass(slots=True)
class _Chunk:
    """Entries of one revision (or one part of a revision too large for a single message)."""

    revision: int
    entries: list[bytes]
    size: int
    fragment: bool  # more parts of this revision follow


class Watcher:
    def __init__(self, limits: WatcherLimits, *, allow_bookmarks: bool = False) -> None:
        self.limits = limits
        self.allow_bookmarks = allow_bookmarks
        self._chunks: deque[_Chunk] = deque()
        self._queued_events = 0
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self.ended = asyncio.Event()
        self.error: EpsyncError | None = None  # why the stream ends, once it must
        self._drain_then_end = False
        # The newest revision handed to this watcher and when: the bookmark policy's clock.
        self.last_revision = 0
        self.last_push = time.monotonic()
        self.events_sent = 0

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def push(self, revision: int, entries: list[bytes]) -> None:
        """Queue one whole revision's entries for this watcher, then enforce the bound.

        `entries` may be the very list other watchers of the same group were given: it is kept as it is
        and never changed. This runs for every watcher an event reaches, so the common case (the
        revision fits one message) is one size sum and one append."""
        if self.ended.is_set() or self._drain_then_end or not entries:
            return
        size = sum(map(len, entries))
        if size <= self.limits.max_message_bytes:
            self._chunks.append(_Chunk(revision, entries, size, fragment=False))
        else:
            self._push_fragments(revision, entries)
        self._queued_events += len(entries)
        self._queued_bytes += size
        if revision > self.last_revision:
            self.last_revision = revision
        self.last_push = time.monotonic()
        self._wakeup.set()
        if self._over_bound():
            self.cut_off(
                ResourceExhausted(
                    f"this watcher fell {self._queued_events} events ({self._queued_bytes} bytes) behind; "
                    "resume from the last revision received completely",
                    reason="WATCHER_TOO_SLOW",
                )
            )

    def _push_fragments(self, revision: int, entries: list[bytes]) -> None:
        """A revision larger than one message, in message-sized parts; all but the last are fragments."""
        limit = self.limits.max_message_bytes
        part: list[bytes] = []
        part_size = 0
        for entry in entries:
            if part and part_size + len(entry) > limit:
                self._chunks.append(_Chunk(revision, part, part_size, fragment=True))
                part, part_size = [], 0
            part.append(entry)
            part_size += len(entry)
        self._chunks.append(_Chunk(revision, part, part_size, fragment=False))

    def _over_bound(self) -> bool:
        over = self._queued_events > self.limits.max_events or self._queued_bytes > self.limits.max_bytes
        return over and self._chunks[0].revision != self._chunks[-1].revision

    def cut_off(self, error: EpsyncError) -> None:
        """End the stream now with `error`, dropping whatever is queued."""
        if self.ended.is_set():
            return
        self._chunks.clear()
        self._queued_events = self._queued_bytes = 0
        if error.reason:
            CUT_OFFS[error.reason] += 1
        self.error = error
        self.ended.set()
        self._wakeup.set()

    def cut_off_silently(self) -> None:
        """The stream is gone (the client left): drop everything, with no status to send."""
        self.cut_off(EpsyncError("the client went away"))
        self.error = None

    def finish(self, error: EpsyncError) -> None:
        """End the stream with `error` once what is queued has been sent (shutdown)."""
        if self.ended.is_set():
            return
        self.error = error
        self._drain_then_end = True
        self._wakeup.set()

    async def next_response(self) -> bytes | None:
        """The next response to send: everything queued that fits one message. None: the stream ends."""
        while not self._chunks:
            if self.ended.is_set():
                return None
            if self._drain_then_end:
                self.ended.set()
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        entries: list[bytes] = []
        size = 0
        fragment = False
        while self._chunks:
            chunk = self._chunks[0]
            if entries and size + chunk.size > self.limits.max_message_bytes:
                break
            self._chunks.popleft()
            entries.extend(chunk.entries)
            size += chunk.size
            if chunk.fragment:
                fragment = True
                break
        self._queued_events -= len(entries)
        self._queued_bytes -= size
        self.events_sent += len(entries)
        return join_response(entries, fragment=fragment)
