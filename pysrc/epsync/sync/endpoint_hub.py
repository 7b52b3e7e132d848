"""Endpoint watches: the Rust index plans who gets what and encodes it; this hands it to the watchers.

Groups live in the Rust `EndpointIndex` (identical filters share one group and one evaluation).
For each committed batch the index returns every group's events as ready-to-send entries, each
distinct event encoded once (`EndpointIndex.apply_stored`), and the same bytes object goes into the
buffer of every watcher of every group that receives it. Catch-up (initial events, replay, the
known-versions difference) is encoded here, from the cache and its history.
"""

from __future__ import annotations

from collections.abc import Mapping

from epsync._core import Selector
from epsync.model.kinds import endpoint_key
from epsync.model.selectors import parse_selector_field
from epsync.sync.cache import ResourceCache
from epsync.sync.hub import BookmarkPolicy, WatchHub
from epsync.sync.plan import Applied
from epsync.sync.watcher import WatcherLimits
from epsync.sync.wire import ADDED, DELETED, MODIFIED, EventType, event_entry, object_with_version
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest

Subject = tuple[str, str, int, int]  # namespace, name, revision, event type


class EndpointWatchHub(WatchHub[int, WatchWorkloadEndpointsRequest]):
    def __init__(self, cache: ResourceCache, limits: WatcherLimits, bookmarks: BookmarkPolicy) -> None:
        super().__init__(cache, limits, bookmarks)
        # Initial events of the snapshot at `_entries_revision`, key -> ADDED entry: encoded once for
        # all the watchers that start at that revision (a reconnect storm), and dropped when the
        # revision moves, so they do not outlive the storm.
        self._entries_revision = -1
        self._current_entries: dict[str, bytes] = {}
        self._filters: dict[int, tuple[str, str, Selector | None]] = {}
        self.subjects_encoded = 0  # for tests and metrics: every serialisation of an event

    def _group(self, request: WatchWorkloadEndpointsRequest) -> int:
        selector = parse_selector_field(request.label_selector, "label_selector")
        group = self._cache.add_endpoint_group(request.namespace, request.node, selector)
        self._filters[group] = (request.namespace, request.node, selector)
        return group

    def _release(self, group: int) -> None:
        self._cache.release_endpoint_group(group)
        if group not in self._members:
            self._filters.pop(group, None)

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

    def _current_entry(self, key: str, revision: int, event_type: EventType.ValueType = ADDED) -> bytes:
        """The endpoint as it is now, in an event of the snapshot at `revision`.

        Catch-up events carry the snapshot's revision, not the object's own, so that a watcher's
        event revisions never decrease: the snapshot at S, its bookmark at S, then live events."""
        current = self._cache.endpoint_state(key)
        assert current is not None
        version, stored = current
        if event_type == ADDED:
            if self._entries_revision != revision:
                self._entries_revision, self._current_entries = revision, {}
            cached = self._current_entries.get(key)
            if cached is not None:
                return cached
        self.subjects_encoded += 1
        entry = event_entry(event_type, object_with_version(stored, version), revision)
        if event_type == ADDED:
            self._current_entries[key] = entry
        return entry

    # --- catch-up -------------------------------------------------------------------------------

    def _initial(self, group: int, revision: int) -> list[bytes]:
        namespace, node, selector = self._filters[group]
        keys = self._cache.matching_endpoint_keys(namespace, node, selector)
        return [self._current_entry(endpoint_key(ns, name), revision) for ns, name in keys]

    def _replay(self, group: int, after: int) -> list[bytes] | None:
        subjects = self._cache.replay_endpoint_group(group, after, self.limits.max_events)
        if subjects is None:
            return None
        return [self._subject_entry(subject) for subject in subjects]

    def _difference(self, group: int, known: Mapping[str, int], revision: int) -> list[bytes]:
        added, modified, deleted = self._cache.diff_endpoint_group(group, known)
        entries = [self._current_entry(endpoint_key(ns, name), revision) for ns, name in added]
        entries += [self._current_entry(endpoint_key(ns, name), revision, MODIFIED) for ns, name in modified]
        for namespace, name in deleted:
            # The client's copy is all there is to go by: the metadata, stamped with S (SPEC §6.4).
            gone = WorkloadEndpoint(metadata=ObjectMeta(namespace=namespace, name=name, resource_version=revision))
            entries.append(event_entry(DELETED, gone.SerializeToString(), revision))
        return entries
