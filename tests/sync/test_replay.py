"""Replay from the cache's history: after a restart as if the server had been up, and without
holding the event loop.

A restarted server loads the store's retained history (`ResourceCache.load` with `history`): from
any revision it covers, a watch must be replayed exactly what a server that had been up throughout
replays, byte for byte. And a long replay is encoded a chunk at a time, letting other tasks run in
between, without losing or repeating what was published meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epsync._core import KnownVersions, split_known_versions
from epsync.errors import OutOfRange
from epsync.model.kinds import PROFILES, WORKLOAD_ENDPOINTS, Kind
from epsync.store.base import Change, Record, Snapshot
from epsync.sync.cache import ResourceCache
from epsync.sync.endpoint_hub import REPLAY_CHUNK, EndpointWatchHub
from epsync.sync.hub import BookmarkPolicy
from epsync.sync.watcher import Watcher, WatcherLimits
from epsync.v1.workload_endpoint_service_pb2 import (
    WatchWorkloadEndpointsRequest,
    WatchWorkloadEndpointsResponse,
    WorkloadEndpointWatchEvent,
)
from tests.factories import endpoint, profile

NAMES = ("e0", "e1", "e2", "e3")
LABELS = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["a", "b"]), max_size=2)
EDIT = st.one_of(
    st.tuples(st.just("endpoint"), st.sampled_from(NAMES), st.sampled_from(["n1", "n2"]), LABELS, st.booleans()),
    st.tuples(st.just("profile"), st.just("p"), st.just(""), LABELS, st.booleans()),
)
FILTERS = [("", ""), ("n1", ""), ("", "app == 'a'"), ("n2", "tier != 'b'")]  # (node, label_selector)
NO_KNOWN_VERSIONS: KnownVersions = split_known_versions(b"", 1)[1]


class Model:
    """The store as a history of changes: what each edit changes, with every revision the history names."""

    def __init__(self) -> None:
        self.records: dict[tuple[Kind, str], Record] = {}
        self.changes: list[Change] = []

    def edit(self, kind: Kind, key: str, value: bytes | None) -> None:
        old = self.records.get((kind, key))
        if value is None and old is None:
            return
        revision = len(self.changes) + 1
        previous, previous_revision = (old.value, old.mod_revision) if old else (None, 0)
        create = old.create_revision if old else revision
        self.changes.append(Change(revision, kind, key, value, previous, create, previous_revision))
        if value is None:
            del self.records[(kind, key)]
        else:
            self.records[(kind, key)] = Record(kind, key, value, create, revision)

    def snapshot(self) -> Snapshot:
        records = sorted(self.records.values(), key=lambda r: (r.kind.value, r.key))
        return Snapshot(len(self.changes), records)


def build(edits: list[tuple[str, str, str, dict[str, str], bool]]) -> Model:
    model = Model()
    for kind, name, node, labels, delete in edits:
        if kind == "profile":
            model.edit(Kind.PROFILE, name, None if delete else PROFILES.encode(profile(name, labels)))
        else:
            stored = WORKLOAD_ENDPOINTS.encode(endpoint(name, node=node, labels=labels, profiles=["p"]))
            model.edit(Kind.WORKLOAD_ENDPOINT, f"default/{name}", None if delete else stored)
    return model


def hub_of(cache: ResourceCache, max_events: int = 10_000) -> EndpointWatchHub:
    return EndpointWatchHub(cache, WatcherLimits(max_events=max_events), BookmarkPolicy())


async def replayed(hub: EndpointWatchHub, after: int, watch_filter: tuple[str, str]) -> list[tuple[int, bytes]]:
    """The events a watch from `after` starts with (every catch-up event and the end bookmark), each as its
    revision and its bytes, in revision order; within a revision, whose order SPEC §6.1 leaves open, by bytes."""
    node, selector = watch_filter
    request = WatchWorkloadEndpointsRequest(resource_version=after, node=node, label_selector=selector)
    watcher = await hub.start(request, NO_KNOWN_VERSIONS)
    hub.remove(watcher)
    response = await watcher.next_response()
    assert response is not None
    events = [
        (e.resource_version, e.SerializeToString()) for e in WatchWorkloadEndpointsResponse.FromString(response).events
    ]
    assert [revision for revision, _ in events] == sorted(revision for revision, _ in events)
    return sorted(events)


@settings(max_examples=60, deadline=None)
@given(edits=st.lists(EDIT, min_size=1, max_size=30), cut=st.integers(0, 30))
def test_a_cache_loaded_with_the_history_replays_exactly_what_a_cache_up_throughout_replays(
    edits: list[tuple[str, str, str, dict[str, str], bool]], cut: int
) -> None:
    model = build(edits)
    revision = len(model.changes)
    since = min(cut, revision)

    async def check() -> None:
        live = ResourceCache()
        live.load(Snapshot(0, []))
        for change in model.changes:
            live.apply([change])
        restarted = ResourceCache()
        restarted.load(model.snapshot(), [c for c in model.changes if c.revision > since], since)
        assert restarted.revision == live.revision == revision
        assert restarted.oldest_replayable == since
        live_hub, restarted_hub = hub_of(live), hub_of(restarted)
        for watch_filter in FILTERS:
            for after in range(max(since, 1), revision + 1):
                assert await replayed(restarted_hub, after, watch_filter) == await replayed(
                    live_hub, after, watch_filter
                ), (after, watch_filter)
            if since > 1:
                with pytest.raises(OutOfRange):
                    await replayed(restarted_hub, since - 1, watch_filter)

    asyncio.run(check())


def test_history_whose_previous_revisions_are_unknown_is_not_loaded() -> None:
    model = build([("endpoint", name, "n1", {}, False) for name in NAMES])
    unknown = [Change(c.revision, c.kind, c.key, c.value, c.previous, c.create_revision) for c in model.changes]
    cache = ResourceCache()
    cache.load(model.snapshot(), unknown[:2] + model.changes[2:], 0)
    assert cache.oldest_replayable == 2  # replays start after the last change it cannot undo


def test_history_that_does_not_end_in_the_stored_objects_is_not_loaded() -> None:
    # A file edited by hand or restored in part: the objects are the truth the cache serves.
    model = build([("endpoint", name, "n1", {}, False) for name in NAMES])
    snapshot = model.snapshot()
    edited = [*snapshot.records[:-1], Record(Kind.WORKLOAD_ENDPOINT, "default/e3", b"", 4, 4)]
    cache = ResourceCache()
    cache.load(Snapshot(snapshot.revision, edited), model.changes, 0)
    assert cache.oldest_replayable == snapshot.revision
    assert cache.stored(Kind.WORKLOAD_ENDPOINT, "default/e3") == (4, b"")


async def test_a_long_replay_yields_the_event_loop_and_misses_nothing_published_meanwhile() -> None:
    cache = ResourceCache()
    cache.load(Snapshot(0, []))
    hub = hub_of(cache)
    revision = 0

    def write(name: str) -> None:
        nonlocal revision
        revision += 1
        stored = WORKLOAD_ENDPOINTS.encode(endpoint(name, labels={"n": str(revision)}))
        applied = cache.apply([Change(revision, Kind.WORKLOAD_ENDPOINT, f"default/{name}", stored, None, revision, 0)])
        assert applied is not None
        hub.publish(applied)

    for i in range(5 * REPLAY_CHUNK):
        write(f"before{i}")
    turns = 0

    async def another_client() -> None:
        nonlocal turns
        while True:  # its first turn comes at the replay's first yield
            turns += 1
            if turns <= 3:
                write(f"meanwhile{turns}")  # published while the replay is being encoded
            await asyncio.sleep(0)

    beside = asyncio.create_task(another_client())
    watcher: Watcher = await hub.start(WatchWorkloadEndpointsRequest(resource_version=1), NO_KNOWN_VERSIONS)
    assert turns >= 5  # it ran between the chunks (5 chunks, a yield before each)
    beside.cancel()
    write("after")  # live, once the watcher has joined
    events: list[WorkloadEndpointWatchEvent] = []
    while watcher.queued_events:
        response = await watcher.next_response()
        assert response is not None
        events += WatchWorkloadEndpointsResponse.FromString(response).events
    revisions = [e.resource_version for e in events if e.object.metadata.name]
    assert revisions == list(range(2, revision + 1))  # every change after 1, once, in order
    assert sum(e.initial_events_end for e in events) == 1
