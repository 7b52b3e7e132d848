"""Endpoint watches: the Rust index plans who gets what and encodes it; this hands it to the watchers.

Groups live in the Rust `EndpointIndex` (identical filters share one group and one evaluation).
For each committed batch the index returns every group's events as ready-to-send entries, each
distinct event encoded once (`EndpointIndex.apply_stored`), and the same bytes object goes into the
buffer of every watcher of every group that receives it. Initial events and the known-versions
difference come encoded from the index too (`EndpointIndex.initial_entries`/`difference_entries`),
each ADDED entry once per snapshot revision for every watcher that starts there; replay is encoded
here, from the cache's history, a chunk at a time.
"""

from __future__ import annotations

import asyncio

from epsync._core import KnownVersions
from epsync.model.kinds import endpoint_key
from epsync.model.selectors import parse_selector_field
from epsync.sync.cache import ResourceCache
from epsync.sync.hub import BookmarkPolicy, WatchHub
from epsync.sync.plan import Applied
from epsync.sync.watcher import WatcherLimits
from epsync.sync.wire import DELETED, EventType, event_entry, object_with_version
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest

Subject = tuple[str, str, int, int]  # namespace, name, revision, event type

# Replayed events encoded between two yields of the event loop: about 2 ms of work.
REPLAY_CHUNK = 100
# Logged changes a replay looks at before it yields the event loop. A node watcher's replay looks only at its
# node's changes; a selector watcher's evaluates its selector on every change logged since its revision, some
# 0.4 µs each, so a resume from 100,000 revisions ago held the loop ~40 ms in one piece (bench/bench_replay.py).
REPLAY_VISITS = 5_000


def _narrowest(request: WatchWorkloadEndpointsRequest, has_selector: bool) -> str:
    """What a watch's filter narrows by most: "node", "selector", "namespace" or "all" (the metrics' filter type)."""
    if request.node:
        return "node"
    if has_selector:
        return "selector"
    return "namespace" if request.namespace else "all"


class EndpointWatchHub(WatchHub[int, WatchWorkloadEndpointsRequest]):
    def __init__(self, cache: ResourceCache, limits: WatcherLimits, bookmarks: BookmarkPolicy) -> None:
        super().__init__(cache, limits, bookmarks)
        self._filters: dict[int, tuple[str, str]] = {}  # group -> (its filter in words, its filter type)

    def _group(self, request: WatchWorkloadEndpointsRequest) -> int:
        selector = parse_selector_field(request.label_selector, "label_selector")
        group = self._cache.add_endpoint_group(request.namespace, request.node, selector)
        parts = [f"namespace={request.namespace}" if request.namespace else "every namespace"]
        parts += [f"node={request.node}"] if request.node else []
        parts += [f"selector={selector}"] if selector is not None else []
        self._filters[group] = (", ".join(parts), _narrowest(request, selector is not None))
        return group

    def _release(self, group: int) -> None:
        self._cache.release_endpoint_group(group)
        if group not in self._members:
            self._filters.pop(group, None)

    def describe(self, group: int) -> str:
        return self._filters.get(group, (f"group {group}", "all"))[0]

    def filter_type(self, group: int) -> str:
        return self._filters.get(group, ("", "all"))[1]

    def publish(self, applied: Applied) -> None:
        # The Rust index encoded every event once; what is left is handing the chunks over.
        self.subjects_encoded += applied.endpoint_events
        for group, chunks in applied.endpoint_deliveries:
            if group in self._members:
                self._deliver(group, chunks)

    # --- encoding -------------------------------------------------------------------------------

    def _subject_entry(self, subject: Subject) -> bytes:
        namespace, name, revision, event_type = subject
        key = endpoint_key(namespace, name)
        self.subjects_encoded += 1
        if event_type == DELETED:
            # The last state that matched, stamped with the deleting revision (SPEC §6.8).
            _, stored = self._state(key, revision - 1)
            return event_entry(DELETED, object_with_version(stored, revision), revision)
        resource_version, stored = self._state(key, revision)
        return event_entry(EventType.ValueType(event_type), object_with_version(stored, resource_version), revision)

    def _state(self, key: str, revision: int) -> tuple[int, bytes]:
        """The endpoint as stored at `revision`: (its resource_version then, its stored bytes)."""
        resource_version, stored = self._cache.endpoint_state_at(key, revision)
        assert stored is not None, f"{key} did not exist at revision {revision}"
        return resource_version, stored

    # --- catch-up -------------------------------------------------------------------------------

    def _initial(self, group: int, revision: int) -> list[bytes]:
        # Catch-up events carry the snapshot's revision, not the object's own, so that a watcher's
        # event revisions never decrease: the snapshot at S, its bookmark at S, then live events.
        entries, encoded = self._cache.endpoint_initial_entries(group, revision)
        self.subjects_encoded += encoded
        return entries

    async def _replay(self, group: int, after: int) -> list[bytes] | None:
        # Encoding an event from the history takes some 20 µs, so a replay of a watcher's buffer of them would hold
        # the event loop for a fifth of a second: it is encoded REPLAY_CHUNK events at a time, yielding between
        # chunks (bench/bench_resume_history.py measures the longest hold). What was published meanwhile is
        # replayed next, until a look at the cache finds nothing new.
        entries: list[bytes] = []
        position = after
        while True:
            room = self.limits.max_events - len(entries)
            part = self._cache.replay_endpoint_group(group, position, room, REPLAY_VISITS) if room > 0 else None
            if part is None:
                return None
            subjects, through = part
            reached = self._cache.revision if through is None else through
            for first in range(0, len(subjects), REPLAY_CHUNK):
                if len(subjects) > REPLAY_CHUNK:  # also before the first chunk: working out the events took a while
                    await asyncio.sleep(0)
                    # The states an event is encoded from (its revision's and the one before) must still be kept.
                    if subjects[first][2] - 1 < self._cache.oldest_replayable:
                        return None
                entries.extend(self._subject_entry(subject) for subject in subjects[first : first + REPLAY_CHUNK])
            if through is None and self._cache.revision == reached:
                return entries
            position = reached
            if through is not None:
                await asyncio.sleep(0)  # between parts of a long log (see REPLAY_VISITS)

    def _difference(self, group: int, known: KnownVersions, revision: int) -> list[bytes]:
        # A DELETED event carries the client's key only, stamped with S: its copy is all there is to go by (SPEC §6.4).
        entries, encoded = self._cache.endpoint_difference_entries(group, known, revision)
        self.subjects_encoded += encoded
        return entries
