"""SPEC §6.4 and §7 across a restart: a watch resumes from any revision the store's history retains.

The embedded store keeps a history row for every write; a restarted server fills its cache with it
(sync/retained.py), so a watch from a revision before the restart is replayed exactly the events it
missed, as if the server had never stopped. A revision older than the retained history is still
OUT_OF_RANGE, naming the oldest revision that can be resumed from, not the restart's.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from epsync.client import Client
from epsync.errors import OutOfRange
from epsync.server.app import EpsyncServer
from epsync.v1.profile_pb2 import Profile
from epsync.v1.watch_pb2 import ADDED, DELETED, MODIFIED
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.conftest import serve_process, server_config
from tests.factories import endpoint, profile
from tests.selector_reference import render
from tests.store.conftest import WorkerStore
from tests.test_watch_property import (
    DELETE_ENDPOINT,
    LABELS,
    PROFILES,
    UPSERT_ENDPOINT,
    WATCHERS,
    DeleteEndpoint,
    DeleteProfile,
    UpsertEndpoint,
    UpsertProfile,
    WatcherSpec,
    apply_edit,
    expected_view,
)
from tests.watch_streams import Event, channel, objects, running_server, watch_endpoints

pytestmark = pytest.mark.sqlite_only  # etcd: a replica's history starts when it starts (README, "Resuming a watch")


def summary(events: list[Event]) -> list[tuple[int, str, int, int, dict[str, str]]]:
    """(type, name, event revision, the object's resource_version, the labels it was given) of each object event."""
    return [
        (e.type, e.object.metadata.name, e.resource_version, e.object.metadata.resource_version, given_labels(e))
        for e in objects(events)
    ]


def rv(obj: WorkloadEndpoint | Profile) -> int:
    return obj.metadata.resource_version


def given_labels(event: Event) -> dict[str, str]:
    """The object's own labels but those the server sets itself."""
    return {k: v for k, v in event.object.metadata.labels.items() if not k.startswith("projectcalico.org/")}


async def test_a_watch_resumes_across_a_restart_with_exactly_the_events_it_missed(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, Client(f"127.0.0.1:{server.port}") as client:
        # Before R: an endpoint that will move into the watch's filter through its profile, unchanged itself.
        inherits = await client.create_endpoint(endpoint("inherits", profiles=["p"]))
        await client.create_profile(profile("p"))
        changed = await client.create_endpoint(endpoint("changed", labels={"app": "web"}))
        doomed = await client.create_endpoint(endpoint("doomed", labels={"app": "web"}))
        since = doomed.metadata.resource_version  # R: the watcher has everything up to here
        changed2 = await client.update_endpoint(endpoint("changed", labels={"app": "web", "v": "2"}))
        await client.create_endpoint(endpoint("other", labels={"app": "db"}))  # never matches
        deleted = await client.delete_endpoint("doomed")
        moved = await client.update_profile(profile("p", {"app": "web"}))
    async with running_server(tmp_path) as restarted, Client(f"127.0.0.1:{restarted.port}") as client:
        assert restarted.cache.oldest_replayable < since
        joined = await client.update_endpoint(endpoint("other", labels={"app": "web"}))
        async with channel(restarted) as opened:
            stream = watch_endpoints(opened, label_selector="app == 'web'", resource_version=since)
            events = await stream.until_synced()
    assert summary(events) == [
        (MODIFIED, "changed", rv(changed2), rv(changed2), {"app": "web", "v": "2"}),
        # The last state that matched, stamped with the deleting revision.
        (DELETED, "doomed", deleted.resource_version, deleted.resource_version, {"app": "web"}),
        # Its own state, unchanged since before R, at the profile edit's revision.
        (ADDED, "inherits", rv(moved), rv(inherits), {}),
        (ADDED, "other", rv(joined), rv(joined), {"app": "web"}),
    ]
    assert next(e for e in events if e.object.metadata.name == "changed").object.spec == changed.spec
    assert events[-1].initial_events_end
    assert events[-1].resource_version == rv(joined)


async def test_the_state_before_the_retained_history_is_rebuilt_with_each_objects_own_revision(
    tmp_path: Path,
) -> None:
    # The history starts after revision O > 0: an object last written before O and moved by a profile
    # edit after it must carry its own resource_version, which only the history's previous revisions tell.
    async with (
        running_server(tmp_path, history_window=8) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        old = await client.create_endpoint(endpoint("old", profiles=["p"]))
        await client.create_profile(profile("p"))
        for i in range(12):
            await client.create_endpoint(endpoint(f"filler{i}", node="elsewhere"))
        since = server.cache.revision
        moved = await client.update_profile(profile("p", {"app": "web"}))
        touched = await client.update_endpoint(endpoint("old", labels={"v": "2"}, profiles=["p"]))
    async with running_server(tmp_path, history_window=8) as restarted:
        assert old.metadata.resource_version < restarted.cache.oldest_replayable < since
        async with channel(restarted) as opened:
            stream = watch_endpoints(opened, label_selector="app == 'web'", resource_version=since)
            events = await stream.until_synced()
    assert summary(events) == [
        (ADDED, "old", moved.metadata.resource_version, old.metadata.resource_version, {}),
        (MODIFIED, "old", touched.metadata.resource_version, touched.metadata.resource_version, {"v": "2"}),
    ]


async def test_a_revision_before_the_retained_history_is_out_of_range_naming_the_oldest_resumable(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, history_window=5) as server, Client(f"127.0.0.1:{server.port}") as client:
        for i in range(20):
            await client.create_endpoint(endpoint(f"e{i}"))
        restart_revision = server.cache.revision
    async with running_server(tmp_path, history_window=5) as restarted:
        oldest = restarted.cache.oldest_replayable
        assert 2 < oldest < restart_revision  # the history, not the restart, is where resuming stops
        async with channel(restarted) as opened:
            error = await watch_endpoints(opened, resource_version=2).until_end()
            assert isinstance(error, OutOfRange)
            assert error.reason == "RESOURCE_VERSION_TOO_OLD"
            assert int(error.metadata["oldestResourceVersion"]) == oldest
            replayed = await watch_endpoints(opened, resource_version=oldest).until_synced()
        assert [e.object.metadata.name for e in objects(replayed)] == [
            f"e{i}" for i in range(20 - (restart_revision - oldest), 20)
        ]


async def test_the_epsync_command_killed_with_kill_9_then_restarted_replays_what_a_watcher_missed(
    tmp_path: Path,
) -> None:
    args = ("--data-dir", str(tmp_path / "data"), "--workers", "1")
    async with serve_process(*args) as server, Client(f"127.0.0.1:{server.port}") as client:
        held = await client.create_endpoint(endpoint("a", labels={"app": "web"}))
        changed = await client.update_endpoint(endpoint("a", labels={"app": "web", "v": "2"}))
        added = await client.create_endpoint(endpoint("b", labels={"app": "web"}))
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
    async with serve_process(*args) as restarted, grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as opened:
        stream = watch_endpoints(opened, label_selector="app == 'web'", resource_version=rv(held))
        events = await stream.until_synced()
    assert summary(events) == [
        (MODIFIED, "a", rv(changed), rv(changed), {"app": "web", "v": "2"}),
        (ADDED, "b", rv(added), rv(added), {"app": "web"}),
    ]


async def test_a_worker_process_resumes_from_its_owners_retained_history(tmp_path: Path) -> None:
    async with running_server(tmp_path / "data") as server, Client(f"127.0.0.1:{server.port}") as client:
        first = await client.create_endpoint(endpoint("a"))
        second = await client.update_endpoint(endpoint("a", labels={"v": "2"}))
    # A worker of `--workers`: a whole server whose datastore is its owner's, over the owner's socket.
    worker_store = WorkerStore(tmp_path / "data" / "epsync.db", Path(tempfile.mkdtemp(prefix="epsync-owner-")))
    worker = EpsyncServer(server_config(tmp_path / "worker"), store=worker_store)
    await worker.start()
    try:
        assert worker.cache.oldest_replayable == 0
        async with channel(worker) as opened:
            events = await watch_endpoints(opened, resource_version=first.metadata.resource_version).until_synced()
        assert summary(events) == [(MODIFIED, "a", rv(second), rv(second), {"v": "2"})]
    finally:
        await worker.stop(grace=0)


# --- the materialised-view property (SPEC §6.1) across a restart ----------------------------------------

Edit = UpsertEndpoint | DeleteEndpoint | UpsertProfile | DeleteProfile
EDITS: st.SearchStrategy[Edit] = st.one_of(
    UPSERT_ENDPOINT,
    UPSERT_ENDPOINT,
    DELETE_ENDPOINT,
    st.builds(UpsertProfile, st.sampled_from(PROFILES), LABELS),
    st.builds(DeleteProfile, st.sampled_from(PROFILES)),
)

State = tuple[dict[str, WorkloadEndpoint], dict[str, Profile]]


async def resumed_views(before: list[Edit], after: list[Edit], specs: list[WatcherSpec], pick: int, data: Path) -> None:
    endpoints: dict[str, WorkloadEndpoint] = {}
    profiles: dict[str, Profile] = {}
    states: list[tuple[int, State]] = []  # the store's state at each revision a client saw before the restart
    async with running_server(data) as server, Client(f"127.0.0.1:{server.port}") as client:
        for edit in before:
            await apply_edit(edit, client, endpoints, profiles)
            states.append((server.cache.revision, (dict(endpoints), dict(profiles))))
    async with running_server(data) as restarted, Client(f"127.0.0.1:{restarted.port}") as client:
        for edit in after:
            await apply_edit(edit, client, endpoints, profiles)
        resumable = [state for state in states if state[0] > 0]  # R = 0 is "from now", no resume
        if not resumable:
            return
        since, (then_endpoints, then_profiles) = resumable[pick % len(resumable)]
        async with channel(restarted) as opened:
            for spec in specs:
                # The view a watcher held at R, then the events the restarted server replays after R.
                view = {
                    key: wep.metadata.resource_version
                    for key, wep in expected_view(spec, then_endpoints, then_profiles).items()
                }
                stream = watch_endpoints(
                    opened,
                    namespace=spec.namespace,
                    node=spec.node,
                    label_selector=render(spec.selector),
                    resource_version=since,
                )
                events = await stream.until_synced()
                for event in objects(events):
                    key = f"{event.object.metadata.namespace}/{event.object.metadata.name}"
                    if event.type == DELETED:
                        assert key in view, (key, stream.summary())
                        del view[key]
                    else:
                        assert (key in view) == (event.type == MODIFIED), (key, stream.summary())
                        view[key] = event.object.metadata.resource_version
                    assert event.resource_version > since
                # SPEC §6.1: revisions never decrease, and no (object, revision) pair repeats.
                revisions = [e.resource_version for e in objects(events)]
                assert revisions == sorted(revisions), stream.summary()
                pairs = {
                    (e.object.metadata.namespace, e.object.metadata.name, e.resource_version) for e in objects(events)
                }
                assert len(pairs) == len(revisions), stream.summary()
                expected = expected_view(spec, endpoints, profiles)
                assert view == {key: wep.metadata.resource_version for key, wep in expected.items()}, spec
                stream.call.cancel()


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(EDITS, min_size=1, max_size=25),
    after=st.lists(EDITS, max_size=8),
    specs=st.lists(WATCHERS, min_size=1, max_size=4),
    pick=st.integers(0, 40),
)
def test_a_watch_resumed_after_a_restart_from_any_retained_revision_holds_exactly_its_matching_endpoints(
    before: list[Edit], after: list[Edit], specs: list[WatcherSpec], pick: int
) -> None:
    with tempfile.TemporaryDirectory(prefix="epsync-resume-property-") as tmp:
        asyncio.run(resumed_views(before, after, specs, pick, Path(tmp)))
