"""What the endpoint and profile watch hubs share: membership, bookmarks, shutdown, resume rules.

A hub is fed every committed batch synchronously (from the datastore's change feed, right after
the cache applied it) and pushes the resulting events into its watchers' buffers. A watch joins
its group synchronously with the end of its catch-up: the catch-up events (initial state, replay
or known-versions diff) reach the cache's current revision S and the watcher joins before the next
batch can be published, so it receives exactly the events after S, with nothing lost or repeated.
A long replay is the one catch-up that yields the event loop on the way (a chunk of events at a
time, so other clients are served meanwhile; see `EndpointWatchHub._replay`): it then catches up
with what was published meanwhile, and its last stretch and the join run without a pause.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from epsync._core import KnownVersions
from epsync.errors import OutOfRange, Unavailable
from epsync.sync.cache import ResourceCache
from epsync.sync.plan import Applied
from epsync.sync.watcher import Watcher, WatcherLimits
from epsync.sync.wire import bookmark_entry

log = logging.getLogger(__name__)

G = TypeVar("G")  # how a hub identifies a group of watchers with the same filter


class WatchRequest(Protocol):
    """The fields every kind's watch request has (its known versions come apart: `KnownVersions`)."""

    @property
    def resource_version(self) -> int: ...
    @property
    def send_initial_events(self) -> bool: ...
    @property
    def allow_bookmarks(self) -> bool: ...
    @property
    def store_id(self) -> str: ...


def _shutting_down() -> Unavailable:
    return Unavailable("the server is shutting down; resume on another server", reason="SHUTTING_DOWN")


@dataclass(frozen=True, slots=True)
class BookmarkPolicy:
    """SPEC §6.5: a bookmark after `interval_seconds` without events, or once the revision has moved
    `revision_step` past the watcher's last event."""

    interval_seconds: float = 60.0
    revision_step: int = 25_000
    tick_seconds: float = 1.0


def resource_version_too_old(requested: int, oldest: int) -> OutOfRange:
    return OutOfRange(
        f"resource_version {requested} is older than the retained history (the oldest this server can resume "
        f"after is {oldest}); re-list, or resume with known_resource_versions",
        reason="RESOURCE_VERSION_TOO_OLD",
        metadata={"oldestResourceVersion": str(oldest)},
    )


Q = TypeVar("Q", bound=WatchRequest)  # the kind's watch request


class WatchHub(abc.ABC, Generic[G, Q]):
    def __init__(self, cache: ResourceCache, limits: WatcherLimits, bookmarks: BookmarkPolicy) -> None:
        self._cache = cache
        self.limits = limits
        self.bookmarks = bookmarks
        self._members: dict[G, set[Watcher]] = {}
        self._group_of: dict[Watcher, G] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._bookmark: tuple[int, bytes] = (-1, b"")
        self.draining = False  # shutting down: streams are being ended and no new one starts
        self.subjects_encoded = 0  # every serialisation of an event (tests and metrics)
        self.responses_sent = 0  # watch responses written, and their bytes (server/watch_stream; metrics)
        self.bytes_sent = 0
        # The store the events come from (its identity, set once the store is open): named in the bookmark
        # that ends each watch's initial events, and checked against the store a resuming client names.
        self.store_id = ""

    # --- membership -------------------------------------------------------------------------------

    @property
    def watcher_count(self) -> int:
        return len(self._group_of)

    def group_sizes(self) -> list[tuple[str, int]]:
        """(the filter as the server reads it, watchers) of every group with watchers (for GetStatus)."""
        return [(self.describe(group), len(members)) for group, members in self._members.items() if members]

    def watchers_by_filter_type(self) -> dict[str, int]:
        """Watchers by the kind of filter they watch with (`filter_type`), for the metrics."""
        out: dict[str, int] = {}
        for group, members in self._members.items():
            kind = self.filter_type(group)
            out[kind] = out.get(kind, 0) + len(members)
        return out

    def describe(self, group: G) -> str:
        """A group's filter in words."""
        return str(group)

    def filter_type(self, group: G) -> str:
        """What a group's filter narrows by: "node", "selector", "namespace" or "all"."""
        return "all"

    def _join(self, group: G, watcher: Watcher) -> None:
        self._members.setdefault(group, set()).add(watcher)
        self._group_of[watcher] = group

    def remove(self, watcher: Watcher) -> None:
        """Take a watcher out (its stream ended); idempotent."""
        group = self._group_of.pop(watcher, None)
        if group is None:
            return
        members = self._members.get(group)
        if members is not None:
            members.discard(watcher)
            if not members:
                del self._members[group]
        self._release(group)

    def _release(self, group: G) -> None:
        """Free what the group holds outside the hub, once per watcher that joined it."""

    def _deliver(self, group: G, chunks: list[tuple[int, list[bytes]]]) -> None:
        for watcher in list(self._members.get(group, ())):
            for revision, entries in chunks:
                watcher.push(revision, entries)
            if watcher.ended.is_set():
                self.remove(watcher)

    # --- starting a watch -------------------------------------------------------------------------

    def check_store(self, request: Q) -> None:
        """A resume names the store its state comes from: another store's (a wiped data directory, another
        cluster) is RESOURCE_VERSION_TOO_OLD at once, before any wait for its revision, so the client re-lists."""
        if request.store_id and self.store_id and request.store_id != self.store_id:
            raise OutOfRange(
                f"the state this watch resumes from comes from another store ({request.store_id[:64]}; this server's "
                f"is {self.store_id}): the data was wiped or this is another cluster; re-list",
                reason="RESOURCE_VERSION_TOO_OLD",
                metadata={"oldestResourceVersion": str(self._cache.oldest_replayable), "storeId": self.store_id},
            )

    async def start(self, request: Q, known: KnownVersions) -> Watcher:
        """A new watcher, caught up to the cache's revision S and joined to its group. The caller has had the
        request's store checked (`check_store`) before waiting for its revision."""
        if self.draining:
            raise _shutting_down()
        group = self._group(request)
        try:
            catch_up = await self._catch_up(group, request, known)
            if self.draining:  # the server began to shut down while a replay yielded
                raise _shutting_down()
        except BaseException:
            self._release(group)
            raise
        # No await since the catch-up's last look at the cache: it reaches exactly this revision.
        revision = self._cache.revision
        watcher = Watcher(self.limits, allow_bookmarks=request.allow_bookmarks)
        watcher.push(revision, [*catch_up, bookmark_entry(revision, initial_events_end=True, store_id=self.store_id)])
        self._join(group, watcher)
        return watcher

    async def _catch_up(self, group: G, request: Q, known: KnownVersions) -> list[bytes]:
        """SPEC §6.3-4: initial state, replay after R, or the known-versions difference, up to the cache's
        revision when it returns."""
        if request.send_initial_events:
            revision = self._cache.revision
            return self._difference(group, known, revision) if known else self._initial(group, revision)
        if request.resource_version > 0:
            replayed = await self._replay(group, request.resource_version)
            revision = self._cache.revision
            if replayed is not None:
                return replayed
            if known:
                return self._difference(group, known, revision)
            oldest = self._cache.oldest_replayable
            if request.resource_version >= oldest:
                raise OutOfRange(
                    f"the changes after resource_version {request.resource_version} are more than a watcher's buffer "
                    f"holds ({self.limits.max_events} events); resume with known_resource_versions, or re-list",
                    reason="RESOURCE_VERSION_TOO_OLD",
                    metadata={"oldestResourceVersion": str(oldest)},
                )
            raise resource_version_too_old(request.resource_version, oldest)
        return self._difference(group, known, self._cache.revision) if known else []

    @abc.abstractmethod
    def _group(self, request: Q) -> G:
        """The group of the request's filter, registered (raises InvalidArgument for a bad filter)."""

    @abc.abstractmethod
    def _initial(self, group: G, revision: int) -> list[bytes]:
        """ADDED entries, at `revision`, for everything the group's filter matches now."""

    @abc.abstractmethod
    async def _replay(self, group: G, after: int) -> list[bytes] | None:
        """The entries the group would have received after `after`, up to the cache's revision when it returns
        (it may yield the event loop on the way, never after its last look at the cache); None when that cannot
        be served (history gone, or more than a watcher's buffer holds)."""

    @abc.abstractmethod
    def _difference(self, group: G, known: KnownVersions, revision: int) -> list[bytes]:
        """Entries that turn the client's `known` map into the group's current state."""

    @abc.abstractmethod
    def publish(self, applied: Applied) -> None:
        """Push one committed batch's events to the watchers they concern."""

    # --- bookmarks and shutdown -------------------------------------------------------------------

    def bookmark(self, revision: int) -> bytes:
        """The bookmark entry at `revision`, encoded once for every watcher that gets it."""
        if self._bookmark[0] != revision:
            self._bookmark = (revision, bookmark_entry(revision))
        return self._bookmark[1]

    def send_due_bookmarks(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        revision = self._cache.revision
        for watcher in list(self._group_of):
            if not watcher.allow_bookmarks:
                continue
            idle = now - watcher.last_push >= self.bookmarks.interval_seconds
            moved = revision - watcher.last_revision >= self.bookmarks.revision_step
            if idle or moved:
                watcher.push(revision, [self.bookmark(revision)])

    def start_ticker(self) -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(self.bookmarks.tick_seconds)
                self.send_due_bookmarks()

        self._ticker = asyncio.get_running_loop().create_task(tick(), name=f"{type(self).__name__} bookmarks")

    async def shutdown(self, spread_seconds: float = 0.0) -> None:
        """End every stream: a last bookmark where allowed, then UNAVAILABLE/SHUTTING_DOWN (SPEC §5). The
        streams end one after another over `spread_seconds`, in random order, so that their clients resume
        elsewhere a few at a time rather than all in the same instant; a watch that starts meanwhile is
        refused the same way."""
        self.draining = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        watchers = list(self._group_of)
        random.shuffle(watchers)
        started = time.monotonic()
        for i, watcher in enumerate(watchers):
            due = started + spread_seconds * i / len(watchers)
            if (wait := due - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if watcher in self._group_of:  # not ended by itself meanwhile
                revision = self._cache.revision
                if watcher.allow_bookmarks:
                    watcher.push(revision, [self.bookmark(revision)])
                watcher.finish(_shutting_down())
