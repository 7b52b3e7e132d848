"""Profile watches: few objects and few watchers, so filters are evaluated here, per group.

Watchers with the same selector share a group, each profile change is evaluated once per group
and each resulting event is encoded once, whoever receives it.
"""

from __future__ import annotations

from collections.abc import Iterable

from epsync._core import KnownVersions, Selector
from epsync.model.kinds import PROFILES
from epsync.model.selectors import parse_selector_field
from epsync.sync.cache import ResourceCache
from epsync.sync.history import State, Transition
from epsync.sync.hub import BookmarkPolicy, WatchHub
from epsync.sync.plan import Applied
from epsync.sync.watcher import WatcherLimits
from epsync.sync.wire import ADDED, DELETED, MODIFIED, EventType, event_entry, object_with_version
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile
from epsync.v1.profile_service_pb2 import WatchProfilesRequest


class ProfileWatchHub(WatchHub[str, WatchProfilesRequest]):
    """Groups are keyed by the canonical selector ("" matches every profile)."""

    def __init__(self, cache: ResourceCache, limits: WatcherLimits, bookmarks: BookmarkPolicy) -> None:
        super().__init__(cache, limits, bookmarks)
        self._selectors: dict[str, Selector | None] = {}

    def _group(self, request: WatchProfilesRequest) -> str:
        selector = parse_selector_field(request.label_selector, "label_selector")
        group = str(selector) if selector is not None else ""
        self._selectors[group] = selector
        return group

    def describe(self, group: str) -> str:
        return f"selector={group}" if group else "every profile"

    def filter_type(self, group: str) -> str:
        return "selector" if group else "all"

    def _release(self, group: str) -> None:
        if group not in self._members:
            self._selectors.pop(group, None)

    def publish(self, applied: Applied) -> None:
        if not applied.profile_transitions or not self._members:
            return
        for group, chunks in self._plan(applied.profile_transitions, list(self._members)).items():
            self._deliver(group, chunks)

    def _plan(self, transitions: Iterable[Transition], groups: list[str]) -> dict[str, list[tuple[int, list[bytes]]]]:
        plan: dict[str, list[tuple[int, list[bytes]]]] = {}
        for transition in transitions:
            before, after = _labels(transition.before), _labels(transition.after)
            entries: dict[EventType.ValueType, bytes] = {}  # this transition's events, encoded once each
            for group in groups:
                event_type = _event_type(self._selectors[group], before, after)
                if event_type is None:
                    continue
                entry = entries.get(event_type)
                if entry is None:
                    entry = entries[event_type] = self._entry(transition, event_type)
                chunks = plan.setdefault(group, [])
                if chunks and chunks[-1][0] == transition.revision:
                    chunks[-1][1].append(entry)
                else:
                    chunks.append((transition.revision, [entry]))
        return plan

    def _entry(self, transition: Transition, event_type: EventType.ValueType) -> bytes:
        self.subjects_encoded += 1
        if event_type == DELETED:
            _, stored = transition.before
            assert stored is not None
            return event_entry(DELETED, object_with_version(stored, transition.revision), transition.revision)
        resource_version, stored = transition.after
        assert stored is not None
        return event_entry(event_type, object_with_version(stored, resource_version), transition.revision)

    def _matching(self, group: str) -> list[Profile]:
        selector = self._selectors[group]
        return [p for p in self._cache.profiles() if selector is None or selector.matches(dict(p.metadata.labels))]

    def _initial(self, group: str, revision: int) -> list[bytes]:
        return [_current_entry(profile, ADDED, revision) for profile in self._matching(group)]

    async def _replay(self, group: str, after: int) -> list[bytes] | None:
        # Profiles are few: their replay is encoded in one go.
        if after < self._cache.oldest_replayable:
            return None
        chunks = self._plan(self._cache.profile_transitions_after(after), [group]).get(group, [])
        entries = [entry for _, chunk in chunks for entry in chunk]
        return entries if len(entries) <= self.limits.max_events else None

    def _difference(self, group: str, known_versions: KnownVersions, revision: int) -> list[bytes]:
        known = dict(known_versions.items())  # profiles are few; a dict serves the lookups below
        entries: list[bytes] = []
        matching = {p.metadata.name: p for p in self._matching(group)}
        for name, profile in matching.items():
            if name not in known:
                entries.append(_current_entry(profile, ADDED, revision))
            elif known[name] != profile.metadata.resource_version:
                entries.append(_current_entry(profile, MODIFIED, revision))
        for name in sorted(set(known) - set(matching)):
            gone = Profile(metadata=ObjectMeta(name=name, resource_version=revision))
            entries.append(event_entry(DELETED, gone.SerializeToString(), revision))
        return entries


def _labels(state: State) -> dict[str, str] | None:
    _, stored = state
    return None if stored is None else dict(PROFILES.decode(stored, 0).metadata.labels)


def _event_type(
    selector: Selector | None, before: dict[str, str] | None, after: dict[str, str] | None
) -> EventType.ValueType | None:
    was = before is not None and (selector is None or selector.matches(before))
    now = after is not None and (selector is None or selector.matches(after))
    if now:
        return MODIFIED if was else ADDED
    return DELETED if was else None


def _current_entry(profile: Profile, event_type: EventType.ValueType, revision: int) -> bytes:
    """A catch-up event: the profile as it is now, stamped with the snapshot's revision."""
    return event_entry(event_type, profile.SerializeToString(), revision)
