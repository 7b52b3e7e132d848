"""Watch semantics, one test per rule of SPEC §6, against a real server on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from epsync.client import Client
from epsync.errors import InvalidArgument, OutOfRange, ResourceExhausted, Unavailable
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1.watch_pb2 import ADDED, BOOKMARK, DELETED, MODIFIED
from tests.factories import endpoint, profile
from tests.watch_streams import channel, named, objects, running_server, watch_endpoints, watch_profiles


async def test_initial_events_then_exactly_one_initial_events_end_bookmark(
    server: EpsyncServer, client: Client
) -> None:
    await client.create_endpoint(endpoint("a", node="n1"))
    await client.create_endpoint(endpoint("b", node="n2"))
    last = await client.create_endpoint(endpoint("c", node="n1"))
    async with channel(server) as opened:
        stream = watch_endpoints(opened, node="n1", send_initial_events=True)
        events = await stream.until_synced()
        assert named(events) == [(ADDED, "a"), (ADDED, "c")]
        revision = last.metadata.resource_version
        # Catch-up events carry the snapshot's revision; objects keep their own.
        assert [e.resource_version for e in events] == [revision] * 3
        assert [e.object.metadata.resource_version for e in objects(events)] == [revision - 2, revision]
        (end,) = [e for e in events if e.initial_events_end]
        assert end.type == BOOKMARK
        assert end.resource_version == revision
        await client.create_endpoint(endpoint("d", node="n1"))
        await stream.until_count(3)
        assert sum(e.initial_events_end for e in stream.events) == 1


async def test_a_watch_from_now_sends_its_end_bookmark_at_once_then_only_new_changes(
    server: EpsyncServer, client: Client
) -> None:
    await client.create_endpoint(endpoint("old"))
    async with channel(server) as opened:
        stream = watch_endpoints(opened)
        await stream.until_synced()
        assert objects(stream.events) == []
        await client.create_endpoint(endpoint("new"))
        assert named(await stream.until_count(1)) == [(ADDED, "new")]


async def test_filter_transitions_of_own_labels(server: EpsyncServer, client: Client) -> None:
    async with channel(server) as opened:
        stream = watch_endpoints(opened, label_selector="app == 'web'", send_initial_events=True)
        await stream.until_synced()
        await client.create_endpoint(endpoint("x", labels={"app": "db"}))  # never matches: nothing
        await client.create_endpoint(endpoint("w", labels={"app": "web"}))
        await client.update_endpoint(endpoint("w", labels={"app": "web", "v": "2"}))
        await client.update_endpoint(endpoint("w", labels={"app": "db"}))
        await client.update_endpoint(endpoint("w", labels={"app": "web"}))
        await client.delete_endpoint("w")
        events = await stream.until_count(5)
        assert named(events) == [(ADDED, "w"), (MODIFIED, "w"), (DELETED, "w"), (ADDED, "w"), (DELETED, "w")]


async def test_deleted_carries_the_last_matching_state_stamped_with_the_causing_revision(
    server: EpsyncServer, client: Client
) -> None:
    async with channel(server) as opened:
        stream = watch_endpoints(opened, label_selector="app == 'web'")
        await stream.until_synced()
        created = await client.create_endpoint(endpoint("w", labels={"app": "web", "keep": "me"}))
        moved = await client.update_endpoint(endpoint("w", labels={"app": "db"}))
        added, deleted = objects(await stream.until_count(2))
        assert added.object == created
        assert deleted.type == DELETED
        assert deleted.resource_version == moved.metadata.resource_version
        assert deleted.object.metadata.resource_version == moved.metadata.resource_version
        assert dict(deleted.object.metadata.labels)["keep"] == "me"  # the state that matched, not the new one


async def test_node_change_moves_an_endpoint_between_node_watchers(server: EpsyncServer, client: Client) -> None:
    await client.create_endpoint(endpoint("e", node="n1"))
    async with channel(server) as opened:
        old_node = watch_endpoints(opened, node="n1", send_initial_events=True)
        new_node = watch_endpoints(opened, node="n2", send_initial_events=True)
        await old_node.until_synced()
        await new_node.until_synced()
        await client.update_endpoint(endpoint("e", node="n2"))
        assert named(await old_node.until_count(2)) == [(ADDED, "e"), (DELETED, "e")]
        assert named(await new_node.until_count(1)) == [(ADDED, "e")]


async def test_profile_edit_moves_endpoints_and_only_watchers_whose_match_changes_hear_of_it(
    server: EpsyncServer, client: Client
) -> None:
    await client.create_profile(profile("team", {"tier": "front"}))
    await client.create_endpoint(endpoint("a", node="n1", profiles=["team"]))
    await client.create_endpoint(endpoint("b", node="n1", profiles=["team"], labels={"tier": "own"}))
    async with channel(server) as opened:
        front = watch_endpoints(opened, label_selector="tier == 'front'", send_initial_events=True)
        back = watch_endpoints(opened, label_selector="tier == 'back'", send_initial_events=True)
        by_node = watch_endpoints(opened, node="n1", send_initial_events=True)
        for stream in (front, back, by_node):
            await stream.until_synced()
        edit = await client.update_profile(profile("team", {"tier": "back"}))
        assert named(await front.until_count(2)) == [(ADDED, "a"), (DELETED, "a")]
        assert named(await back.until_count(1)) == [(ADDED, "a")]
        moved = objects(back.events)[0]
        assert moved.resource_version == edit.metadata.resource_version  # the profile edit's revision
        assert moved.object.metadata.resource_version < edit.metadata.resource_version  # the endpoint's own
        # The node watcher's match did not change: a later change of its own is the next thing it sees.
        await client.update_endpoint(endpoint("b", node="n1", profiles=["team"], labels={"tier": "own", "x": "1"}))
        assert named(await by_node.until_count(3)) == [(ADDED, "a"), (ADDED, "b"), (MODIFIED, "b")]


async def test_resume_replays_exactly_the_missed_events(server: EpsyncServer, client: Client) -> None:
    async with channel(server) as opened:
        first = watch_endpoints(opened, label_selector="app == 'web'")
        await first.until_synced()
        await client.create_endpoint(endpoint("a", labels={"app": "web"}))
        (added,) = objects(await first.until_count(1))
        first.call.cancel()
        await client.update_endpoint(endpoint("a", labels={"app": "web", "v": "2"}))
        await client.create_endpoint(endpoint("b", labels={"app": "db"}))
        await client.delete_endpoint("a")
        resumed = watch_endpoints(opened, label_selector="app == 'web'", resource_version=added.resource_version)
        events = await resumed.until_synced()
        assert named(events) == [(MODIFIED, "a"), (DELETED, "a")]
        assert events[-1].initial_events_end


async def test_resume_past_the_history_without_known_versions_is_out_of_range(
    tmp_path: Path, datastore_settings: dict[str, Any]
) -> None:
    async with (
        running_server(tmp_path, **datastore_settings, history_window=5) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        for i in range(20):
            await client.create_endpoint(endpoint(f"e{i}"))
        async with channel(server) as opened:
            stream = watch_endpoints(opened, resource_version=2)
            error = await stream.until_end()
        assert isinstance(error, OutOfRange)
        assert error.reason == "RESOURCE_VERSION_TOO_OLD"
        assert int(error.metadata["oldestResourceVersion"]) == server.cache.oldest_replayable > 2


async def test_known_versions_difference_when_history_is_gone(
    tmp_path: Path, datastore_settings: dict[str, Any]
) -> None:
    async with (
        running_server(tmp_path, **datastore_settings, history_window=5) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        kept = await client.create_endpoint(endpoint("kept"))
        changed = await client.create_endpoint(endpoint("changed"))
        doomed = await client.create_endpoint(endpoint("doomed"))
        known = {f"default/{e.metadata.name}": e.metadata.resource_version for e in (kept, changed, doomed)} | {
            "default/never-existed": 1
        }
        await client.update_endpoint(endpoint("changed", labels={"v": "2"}))
        await client.delete_endpoint("doomed")
        for i in range(20):
            await client.create_endpoint(endpoint(f"filler{i}", node="elsewhere"))
        async with channel(server) as opened:
            stream = watch_endpoints(opened, node="node1", resource_version=1, known_resource_versions=known)
            events = await stream.until_synced()
        revision = server.cache.revision
        assert sorted(named(events)) == sorted([(MODIFIED, "changed"), (DELETED, "doomed"), (DELETED, "never-existed")])
        for event in objects(events):
            assert event.resource_version == revision
        gone = next(e for e in events if e.object.metadata.name == "doomed")
        assert gone.object.metadata.resource_version == revision
        assert not gone.object.HasField("spec")  # metadata only: all the server knows of the client's copy


async def test_reconnect_after_a_restart_with_nothing_changed_gets_one_bookmark(
    tmp_path: Path, datastore_settings: dict[str, Any]
) -> None:
    async with running_server(tmp_path, **datastore_settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        view = client.watch(node="node1")
        created = [await client.create_endpoint(endpoint(f"e{i}")) for i in range(3)]
        async for event in view:
            if event.initial_events_end:
                break
        known = {f"default/{e.metadata.name}": e.metadata.resource_version for e in created}
        revision = view.revision
    async with running_server(tmp_path, **datastore_settings) as restarted, channel(restarted) as opened:
        stream = watch_endpoints(opened, node="node1", resource_version=revision, known_resource_versions=known)
        events = await stream.until_synced()
        assert len(events) == 1
        assert events[0].type == BOOKMARK
        assert events[0].resource_version == revision


async def test_resource_version_from_the_future_is_too_new(server: EpsyncServer, client: Client) -> None:
    await client.create_endpoint(endpoint("a"))
    async with channel(server) as opened:
        error = await watch_endpoints(opened, resource_version=server.cache.revision + 100).until_end()
    assert isinstance(error, OutOfRange)
    assert error.reason == "RESOURCE_VERSION_TOO_NEW"


async def test_periodic_bookmarks_only_when_allowed(tmp_path: Path, datastore_settings: dict[str, Any]) -> None:
    timings = {"bookmark_interval_seconds": 0.2, "bookmark_tick_seconds": 0.05}
    async with (
        running_server(tmp_path, **datastore_settings, **timings) as server,
        channel(server) as opened,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        allowed = watch_endpoints(opened, allow_bookmarks=True)
        silent = watch_endpoints(opened)
        await silent.until_synced()
        events = await allowed.read_until(lambda es: len([e for e in es if e.type == BOOKMARK]) >= 3)
        assert [e.initial_events_end for e in events[:3]] == [True, False, False]
        # Both watchers were idle through those periodic bookmarks. A write both see comes after anything the
        # server sent the silent one in that time: it must have had the end of its catch-up and nothing else.
        sentinel = await client.create_endpoint(endpoint("sentinel"))
        await silent.until_count(1)
        assert [(e.type, e.initial_events_end) for e in silent.events] == [(BOOKMARK, True), (ADDED, False)]
        assert silent.events[-1].resource_version == sentinel.metadata.resource_version
        assert len(silent.responses) == 2


COUNT = 1200


async def test_slow_watcher_is_cut_off_without_delaying_writers_and_resumes_losing_nothing(
    tmp_path: Path, datastore_settings: dict[str, Any]
) -> None:
    async with (
        # Small messages: a stalled client's transport windows fill after a few, and the rest queue.
        running_server(tmp_path, **datastore_settings, watcher_max_events=20, max_message_bytes=64 * 1024) as server,
        channel(server) as opened,
    ):
        stalled = watch_endpoints(opened, send_initial_events=True)
        await stalled.until_synced()
        async with Client(f"127.0.0.1:{server.port}") as client:
            # Big objects fill the stalled stream's transport windows fast; the rest queue in its buffer.
            payload = {f"k{i}": "v" * 60 for i in range(60)}
            writes = [
                wep_pb.WriteWorkloadEndpointsRequest(
                    request_id=str(i),
                    create=wep_pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint(f"e{i}", labels=payload)),
                )
                for i in range(COUNT)
            ]
            async with asyncio.timeout(20):  # writers are never held up by the stalled watcher
                answers = [r async for r in client.write_endpoints(writes)]
            assert all(answer.status.code == 0 for answer in answers)
            assert server.endpoint_hub.watcher_count == 0  # cut off, its buffer dropped
            error = await stalled.until_end(within=20)
            assert isinstance(error, ResourceExhausted)
            assert error.reason == "WATCHER_TOO_SLOW"
            held = {
                f"default/{e.object.metadata.name}": e.object.metadata.resource_version for e in objects(stalled.events)
            }
            last_complete = max(e.resource_version for e in stalled.events)
            assert len(held) < COUNT
            # Its backlog is more than its buffer, so the server sends the difference to what it holds.
            resumed = watch_endpoints(opened, resource_version=last_complete, known_resource_versions=held)
            await resumed.until_synced(within=20)
            assert {e.type for e in objects(resumed.events)} == {ADDED}
            names = {k.split("/")[1] for k in held} | {e.object.metadata.name for e in objects(resumed.events)}
            assert names == {f"e{i}" for i in range(COUNT)}
            assert len(held) + len(objects(resumed.events)) == COUNT  # nothing sent twice


async def test_each_event_is_encoded_once_however_many_watchers_receive_it(
    server: EpsyncServer, client: Client
) -> None:
    async with channel(server) as opened:
        streams = [watch_endpoints(opened, node="node1") for _ in range(10)]
        streams += [watch_endpoints(opened, label_selector=f"has(app) && n != '{i}'") for i in range(10)]
        for stream in streams:
            await stream.until_synced()
        before = server.endpoint_hub.subjects_encoded
        await client.create_endpoint(endpoint("a", labels={"app": "web"}))
        for stream in streams:
            await stream.until_count(1)
        assert server.endpoint_hub.subjects_encoded - before == 1
        assert {bytes(s.responses[-1].SerializeToString()) for s in streams} == {
            streams[0].responses[-1].SerializeToString()
        }


async def test_shutdown_sends_a_bookmark_then_shutting_down(tmp_path: Path, datastore_settings: dict[str, Any]) -> None:
    async with running_server(tmp_path, **datastore_settings) as server, channel(server) as opened:
        stream = watch_endpoints(opened, allow_bookmarks=True)
        await stream.until_synced()
        stop = asyncio.create_task(server.stop(grace=1))
        error = await stream.until_end()
        await stop
    assert isinstance(error, Unavailable)
    assert error.reason == "SHUTTING_DOWN"
    assert stream.events[-1].type == BOOKMARK
    assert not stream.events[-1].initial_events_end


async def test_a_bad_selector_is_invalid_argument_with_its_position(server: EpsyncServer) -> None:
    async with channel(server) as opened:
        error = await watch_endpoints(opened, label_selector="app == ").until_end()
    assert isinstance(error, InvalidArgument)
    assert error.violations[0].field == "label_selector"
    assert "position" in error.violations[0].description


async def test_profile_watch_filters_on_profile_labels(server: EpsyncServer, client: Client) -> None:
    labelled = profile("p1")
    labelled.metadata.labels["team"] = "a"
    await client.create_profile(labelled)
    await client.create_profile(profile("p2"))
    async with channel(server) as opened:
        stream = watch_profiles(opened, label_selector="team == 'a'", send_initial_events=True)
        await stream.until_synced()
        assert named(stream.events) == [(ADDED, "p1")]
        moved = profile("p2")
        moved.metadata.labels["team"] = "a"
        await client.update_profile(moved)
        await client.delete_profile("p1")
        assert named(await stream.until_count(3)) == [(ADDED, "p1"), (ADDED, "p2"), (DELETED, "p1")]
        resumed = watch_profiles(
            opened, label_selector="team == 'a'", resource_version=stream.events[-1].resource_version - 1
        )
        assert named(await resumed.until_synced()) == [(DELETED, "p1")]


async def test_the_client_view_follows_changes_and_survives_a_server_restart(
    tmp_path: Path, datastore_settings: dict[str, Any]
) -> None:
    async with running_server(tmp_path, **datastore_settings) as server:
        port = server.port
        async with Client(f"127.0.0.1:{port}") as client:
            await client.create_endpoint(endpoint("a", labels={"app": "web"}))
    # The view outlives the server it started on: the next server comes up on the same port and data.
    from epsync.client.view import Backoff

    async with Client(f"127.0.0.1:{port}") as client:
        view = client.watch(selector="app == 'web'", backoff=Backoff(initial=0.05, maximum=0.2))
        iterator = view.__aiter__()

        async def next_until(predicate: object) -> None:
            async with asyncio.timeout(10):
                async for event in iterator:
                    if predicate(event):  # type: ignore[operator]
                        return

        async with running_server(tmp_path, **datastore_settings, listen=f"127.0.0.1:{port}") as server:
            await next_until(lambda e: e.initial_events_end)
            assert set(view.objects) == {"default/a"}
        async with (
            running_server(tmp_path, **datastore_settings, listen=f"127.0.0.1:{port}") as server,
            Client(f"127.0.0.1:{server.port}") as writer,
        ):
            await writer.create_endpoint(endpoint("b", labels={"app": "web"}))
            await writer.delete_endpoint("a")
            await next_until(lambda e: e.type == "DELETED")
            assert set(view.objects) == {"default/b"}
            assert view.reconnects >= 1


@pytest.mark.parametrize("output", ["table", "json", "yaml"])
async def test_cli_watch_prints_events(server: EpsyncServer, client: Client, output: str) -> None:
    from tests.conftest import epsync_command

    await client.create_endpoint(endpoint("a", node="n1"))
    process = await asyncio.create_subprocess_exec(
        *epsync_command(
            "watch", "--server", f"127.0.0.1:{server.port}", "weps", "--node", "n1", "-o", output, "--limit", "2"
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 10)
    await client.update_endpoint(endpoint("a", node="n1", labels={"v": "2"}))
    rest, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, err
    text = (first + rest).decode()
    assert text.count("ADDED") == 1
    assert text.count("MODIFIED") == 1
    if output == "table":
        assert "default/a  n1" in text
        assert "SYNCED" in text
