"""The in-memory view every read is served from, fed by the datastore's change feed.

Like Kubernetes' watch cache or Calico's Typha, the server keeps every object in memory,
bootstrapped from one consistent snapshot and then advanced by each committed batch of changes
(after it is durable). Endpoint filtering (namespace, node, selectors over labels inherited from
profiles) is delegated to the Rust `EndpointIndex`, so a filtered List costs one call into Rust
for a whole page.

Endpoints are kept as the datastore stored them (wire bytes without resource_version), not
decoded: a decoded protobuf message takes about five times the memory of its encoding, and what
the cache serves most (watch events and List pages) is wire bytes anyway (`epsync.sync.wire`).
The bytes object is the one the change feed delivered, so the history shares it too. Profiles,
few and read by every profile-label lookup, stay decoded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from sortedcontainers import SortedDict

from epsync._core import EndpointIndex, KnownVersions, Selector
from epsync.model.kinds import (
    PROFILES,
    RESOURCE_TYPES,
    WORKLOAD_ENDPOINTS,
    Kind,
    ResourceType,
    endpoint_key,
    split_endpoint_key,
)
from epsync.store.base import Change, Record, Snapshot
from epsync.store.feed import RevisionWaiters
from epsync.sync.history import ObjectHistory, State, Transition
from epsync.sync.plan import Applied
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

log = logging.getLogger(__name__)

# Profiles are matched against selectors in chunks: one call into Rust per chunk, not per profile.
_PROFILE_CHUNK = 512
# The retained history is applied at start in batches of this many changes (start-up serves nobody yet;
# the batches only keep the lists handed to the index small).
_HISTORY_CHUNK = 10_000


T = TypeVar("T")
R = TypeVar("R", WorkloadEndpoint, Profile)


@dataclass(frozen=True, slots=True)
class StoredEndpoint:
    """An endpoint as the cache holds it: its key parts, resource_version and stored bytes."""

    namespace: str
    name: str
    resource_version: int
    stored: bytes


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    more: bool


class ResourceCache:
    """Every object at one revision, the endpoint label index, and the recent past.

    The recent past (the last `history_window` revisions) is what watch resume replays: the
    index keeps each revision's label transitions, and `endpoint_history`/`profile_history`
    keep the objects' states, so an event at a past revision carries the object as it was.
    """

    def __init__(self, history_window: int = 100_000) -> None:
        self._revisions = RevisionWaiters()
        # "<kind>/<key>" -> revision of stored values that do not decode, left out (see `load`)
        self.undecodable: dict[str, int] = {}
        self.history_window = history_window
        # key -> (resource_version, stored bytes)
        self._endpoints: dict[str, tuple[int, bytes]] = {}
        self._profiles: SortedDict = SortedDict()
        self._index = EndpointIndex()
        self._endpoint_history = ObjectHistory()
        self._profile_history = ObjectHistory()

    @property
    def revision(self) -> int:
        """Every change up to this revision is applied."""
        return self._revisions.revision

    def load(self, snapshot: Snapshot, history: Sequence[Change] = (), since: int | None = None) -> None:
        """Start from a consistent snapshot; every later batch must come through `apply`.

        `history`: every change the datastore retains after revision `since` up to the snapshot's
        (`changes_since(since)`), so that watches can resume from before the start (SPEC §7: a restart
        keeps history). The cache then starts from the state at `since`, rebuilt by undoing the changes
        on the snapshot, and applies them as it would have live: the index logs their transitions and
        the object histories their states, exactly as if this server had been up throughout. Only the
        last `history_window` revisions are kept, and only changes that name their previous revision
        can be undone: the history starts after the last one that does not.

        A record whose value does not decode (written by something other than epsync, or damaged)
        is left out, named in the log and in `undecodable`: it must not keep the server from starting.
        """
        start = snapshot.revision if since is None else max(since, snapshot.revision - self.history_window)
        retained = [c for c in history if start < c.revision <= snapshot.revision]
        for change in retained:
            if change.previous_revision is None:
                start = change.revision
        retained = [c for c in retained if c.revision > start]
        if retained and not _ends_in(retained, snapshot):
            log.warning(
                "the datastore's history does not end in the objects it stores (edited by hand, or restored in part): "
                "it is not used, and watches resume from revision %d on",
                snapshot.revision,
            )
            retained, start = [], snapshot.revision
        self._load(_state_before(snapshot, retained, start))
        for first in range(0, len(retained), _HISTORY_CHUNK):
            self.apply(retained[first : first + _HISTORY_CHUNK])
        self._revisions.advance(snapshot.revision)

    def _load(self, snapshot: Snapshot) -> None:
        self.undecodable = {}
        bad = _undecodable_indexes([(r.kind, r.value) for r in snapshot.records])
        if bad:
            for i in sorted(bad):
                self._note_undecodable(
                    snapshot.records[i].kind, snapshot.records[i].key, snapshot.records[i].mod_revision
                )
            snapshot = Snapshot(snapshot.revision, [r for i, r in enumerate(snapshot.records) if i not in bad])
        endpoints = [r for r in snapshot.records if r.kind is Kind.WORKLOAD_ENDPOINT]
        profiles = [PROFILES.decode(r.value, r.mod_revision) for r in snapshot.records if r.kind is Kind.PROFILE]
        self._endpoints = {r.key: (r.mod_revision, r.value) for r in endpoints}
        self._profiles = SortedDict({p.metadata.name: p for p in profiles})
        self._index = EndpointIndex()
        # The index reads what it needs from the stored bytes and keeps these very objects.
        self._index.load_stored(
            [(*split_endpoint_key(r.key), r.mod_revision, r.value) for r in endpoints],
            [(r.key, r.value) for r in snapshot.records if r.kind is Kind.PROFILE],
        )
        self._index.reset_log(snapshot.revision)
        self._endpoint_history = ObjectHistory()
        self._profile_history = ObjectHistory()
        self._revisions.reset(snapshot.revision)

    @property
    def oldest_replayable(self) -> int:
        """The oldest revision a watch can resume after by replay."""
        return int(self._index.log_start)

    def apply(self, changes: Sequence[Change]) -> Applied | None:
        """Advance by one committed batch; returns what the watch hubs need, None if nothing was new."""
        # A batch the loaded snapshot already contains (it raced start-up) must not be applied twice.
        changes = [c for c in changes if c.revision > self.revision]
        if not changes:
            return None
        bad = _undecodable_indexes([(c.kind, c.value) for c in changes])
        if bad:
            changes = self._without_undecodable(changes, bad)
            if not changes:
                return None
        elif self.undecodable:
            for change in changes:  # each replaced or removed a value that did not decode, if it was one
                self.undecodable.pop(f"{change.kind.value}/{change.key}", None)
        # Stored bytes go to the index as they are: it reads node, labels and profiles itself and
        # hands back every event encoded, once, for the groups that get it.
        endpoint_changes: list[tuple[int, str, str, bytes | None, bytes | None, int]] = []
        profile_changes: list[tuple[int, str, bytes | None]] = []
        profile_transitions: list[Transition] = []
        for change in changes:
            if change.kind is Kind.WORKLOAD_ENDPOINT:
                old_endpoint = self._endpoints.get(change.key)
                # The cache's own bytes are the previous value (and, unlike `change.previous`, always
                # known: a datastore that re-listed after a compaction may not know it); sharing them
                # keeps one copy.
                before: State = (0, None) if old_endpoint is None else old_endpoint
                self._endpoint_history.record(change.key, change.revision, change.value, before)
                namespace, name = split_endpoint_key(change.key)
                endpoint_changes.append((change.revision, namespace, name, change.value, before[1], before[0]))
                if change.value is None:
                    self._endpoints.pop(change.key, None)
                else:
                    self._endpoints[change.key] = (change.revision, change.value)
            else:
                old_profile = self._profiles.get(change.key)
                before = _profile_before(old_profile, change)
                self._profile_history.record(change.key, change.revision, change.value, before)
                profile_transitions.append(
                    Transition(change.revision, change.key, before, (change.revision, change.value))
                )
                profile_changes.append((change.revision, change.key, change.value))
                if change.value is None:
                    self._profiles.pop(change.key, None)
                else:
                    self._profiles[change.key] = PROFILES.decode(change.value, change.revision)
        deliveries, events = self._index.apply_stored(endpoint_changes, profile_changes)
        self._trim_history()
        self._revisions.advance(changes[-1].revision)
        return Applied(self.revision, deliveries, events, profile_transitions)

    def _note_undecodable(self, kind: Kind, key: str, revision: int) -> None:
        log.error(
            "the stored %s %s at revision %d does not decode (written by something other than epsync, or damaged); "
            "it is left out: write it again, or delete it",
            kind.value,
            key,
            revision,
        )
        self.undecodable[f"{kind.value}/{key}"] = revision

    def _without_undecodable(self, changes: Sequence[Change], bad: set[int]) -> list[Change]:
        """`changes` without the values that do not decode: the key is gone as far as the cache and the
        watchers know (a deletion, if they held it), until a decodable value comes."""
        kept: list[Change] = []
        for i, change in enumerate(changes):
            if i not in bad:
                self.undecodable.pop(f"{change.kind.value}/{change.key}", None)
                kept.append(change)
                continue
            self._note_undecodable(change.kind, change.key, change.revision)
            held = self._endpoints if change.kind is Kind.WORKLOAD_ENDPOINT else self._profiles
            if change.key in held:
                kept.append(dataclasses.replace(change, value=None))
        return kept

    def _trim_history(self) -> None:
        # Trimmed in steps of a tenth of the window, so the cost is paid rarely and in bulk.
        cut = self.revision - self.history_window
        if cut - self.oldest_replayable >= max(1, self.history_window // 10):
            self._index.trim_log(cut)
            self._endpoint_history.trim(cut)
            self._profile_history.trim(cut)

    async def wait_for_revision(self, revision: int, within_seconds: float) -> None:
        """Return once the cache has reached `revision`; RevisionNotReached after `within_seconds`."""
        await self._revisions.wait(revision, within_seconds)

    def get(self, rtype: ResourceType[R], key: str) -> R | None:
        """The cached object of `rtype` under `key`, for code that is generic over kinds."""
        if rtype.kind is Kind.WORKLOAD_ENDPOINT:
            return self.get_endpoint(key)  # type: ignore[return-value]
        return cast("R | None", self._profiles.get(key))

    def get_endpoint(self, key: str) -> WorkloadEndpoint | None:
        """The endpoint under `key`, decoded (a new message the caller may change)."""
        found = self._endpoints.get(key)
        return None if found is None else WORKLOAD_ENDPOINTS.decode(found[1], found[0])

    def stored(self, kind: Kind, key: str) -> tuple[int, bytes] | None:
        """The object under `key` as the datastore stored it: its resource_version and stored bytes (without
        resource_version), not decoded; None if there is none."""
        if kind is Kind.WORKLOAD_ENDPOINT:
            return self._endpoints.get(key)
        profile = self._profiles.get(key)
        return None if profile is None else (profile.metadata.resource_version, PROFILES.encode(profile))

    def endpoint_state_at(self, key: str, revision: int) -> State:
        """The endpoint under `key` as it was at `revision` (within the retained window), as stored."""
        if self._endpoint_history.tracks(key):
            return self._endpoint_history.state_at(key, revision)
        current = self._endpoints.get(key)
        return (0, None) if current is None else current

    def get_profile(self, name: str) -> Profile | None:
        return self._profiles.get(name)  # type: ignore[no-any-return]

    def endpoint_count(self) -> int:
        return len(self._endpoints)

    def list_endpoints(
        self,
        *,
        namespace: str,
        node: str,
        selector: Selector | None,
        after: tuple[str, str] | None,
        limit: int,
        max_bytes: int | None = None,
    ) -> Page[StoredEndpoint]:
        """Up to `limit` matching endpoints after `after`, in key order; with `max_bytes`, also no more stored
        bytes than that (the first item always comes, whatever its size), so that a page fits a response."""
        keys = self._index.query(namespace, node, selector, after, limit + 1)
        items: list[StoredEndpoint] = []
        size = 0
        for ns, name in keys[:limit]:
            resource_version, stored = self._endpoints[endpoint_key(ns, name)]
            size += len(stored)
            if max_bytes is not None and items and size > max_bytes:
                return Page(items, more=True)
            items.append(StoredEndpoint(ns, name, resource_version, stored))
        return Page(items, more=len(keys) > limit)

    # --- endpoint watcher groups, kept by the Rust index --------------------------------------------

    def add_endpoint_group(self, namespace: str, node: str, selector: Selector | None) -> int:
        """The group of watchers with this filter (made, or shared with identical filters); release it once each."""
        return int(self._index.add_group(namespace, node, selector))

    def release_endpoint_group(self, group: int) -> None:
        self._index.release_group(group)

    def replay_endpoint_group(
        self, group: int, after: int, limit: int, max_visits: int
    ) -> tuple[list[tuple[str, str, int, int]], int | None] | None:
        """The group's events after `after` as (namespace, name, revision, event type), visiting about `max_visits`
        logged changes at most (0: all), and the revision they go up to when that is short of the cache's (None:
        they go up to the cache's revision); None when that is not retained or more than `limit`."""
        return self._index.replay_part(group, after, limit, max_visits)

    def endpoint_initial_entries(self, group: int, revision: int) -> tuple[list[bytes], int]:
        """The group's initial events at the snapshot revision `revision` (ADDED for every match, in key order) as
        encoded event entries, and how many of them were newly encoded: an ADDED entry at a revision is encoded
        once for every watcher that starts there (SPEC §6.7)."""
        return self._index.initial_entries(group, revision)

    def endpoint_difference_entries(
        self, group: int, known: Mapping[str, int] | KnownVersions, revision: int
    ) -> tuple[list[bytes], int]:
        """What turns a client's known versions into the group's state at `revision`, as encoded event entries
        (ADDED, then MODIFIED, then DELETED with only the known key), and how many were newly encoded."""
        return self._index.difference_entries(group, known, revision)

    def profile_transitions_after(self, revision: int) -> Iterator[Transition]:
        """Every retained profile change after `revision`, in revision order."""
        return self._profile_history.transitions_after(revision)

    def profiles(self) -> list[Profile]:
        """Every profile, by name."""
        return list(self._profiles.values())

    def list_profiles(
        self, *, selector: Selector | None, after: str | None, limit: int, max_bytes: int | None = None
    ) -> Page[Profile]:
        """Up to `limit` matching profiles after `after`, by name, and with `max_bytes` no more encoded bytes than
        that (the first always comes)."""
        names = self._profiles.irange(minimum=after, inclusive=(False, True)) if after else iter(self._profiles)
        items: list[Profile] = []
        size = 0
        for chunk in _chunks(names, _PROFILE_CHUNK):
            profiles = [self._profiles[n] for n in chunk]
            if selector is not None and not selector.is_all:
                matching = selector.select([dict(p.metadata.labels) for p in profiles])
                profiles = [profiles[i] for i in matching]
            for profile in profiles:
                if len(items) == limit:
                    return Page(items, more=True)
                size += profile.ByteSize()
                if max_bytes is not None and items and size > max_bytes:
                    return Page(items, more=True)
                items.append(profile)
        return Page(items, more=False)


def _ends_in(changes: Sequence[Change], snapshot: Snapshot) -> bool:
    """Whether each key's last change in `changes` is what `snapshot` holds for it (its value and revision)."""
    last = {(c.kind, c.key): c for c in changes}
    held = {(r.kind, r.key): r for r in snapshot.records}
    for name, change in last.items():
        record = held.get(name)
        if record is None or change.value is None:
            if record is not None or change.value is not None:
                return False
        elif record.value != change.value or record.mod_revision != change.revision:
            return False
    return True


def _state_before(snapshot: Snapshot, changes: Sequence[Change], revision: int) -> Snapshot:
    """The records as they were at `revision`: `snapshot` with `changes` (every change after `revision` up to
    the snapshot's, each naming its previous revision) undone, last first."""
    if not changes:
        return snapshot
    records = {(r.kind, r.key): r for r in snapshot.records}
    for change in reversed(changes):
        if change.previous is None:
            records.pop((change.kind, change.key), None)
        else:
            assert change.previous_revision is not None
            records[(change.kind, change.key)] = Record(
                change.kind, change.key, change.previous, change.create_revision, change.previous_revision
            )
    return Snapshot(revision, sorted(records.values(), key=lambda r: (r.kind.value, r.key)))


def _undecodable_indexes(values: Sequence[tuple[Kind, bytes | None]]) -> set[int]:
    """The indexes of the values that do not decode as their kind's message (`ResourceType.undecodable`; a
    deletion has nothing to decode). One pass and one call per kind present: this runs for every committed
    batch, most often of one change."""
    by_kind: dict[Kind, tuple[list[int], list[bytes]]] = {}
    for i, (kind, value) in enumerate(values):
        if value is not None:
            positions, encoded = by_kind.setdefault(kind, ([], []))
            positions.append(i)
            encoded.append(value)
    bad: set[int] = set()
    for kind, (positions, encoded) in by_kind.items():
        bad.update(positions[j] for j in RESOURCE_TYPES[kind].undecodable(encoded))
    return bad


def _profile_before(old: Profile | None, change: Change) -> State:
    """The state a change ends: the cached profile, as stored. A datastore that re-listed after a
    compaction may not know the previous value; the cache's own copy is the same object."""
    if old is None:
        return (0, None)
    previous = change.previous if change.previous is not None else PROFILES.encode(old)
    return (old.metadata.resource_version, previous)


def _chunks(names: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
