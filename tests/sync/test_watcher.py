"""A watcher's buffer: coalescing, fragments, the bound, and the two ways a stream ends."""

from __future__ import annotations

from epsync.errors import ResourceExhausted, Unavailable
from epsync.sync.watcher import Watcher, WatcherLimits
from epsync.sync.wire import bookmark_entry
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsResponse


def entries(revision: int, count: int) -> list[bytes]:
    return [bookmark_entry(revision)] * count


async def test_everything_queued_goes_out_in_one_response() -> None:
    watcher = Watcher(WatcherLimits())
    for revision in range(1, 6):
        watcher.push(revision, entries(revision, 2))
    response = WatchWorkloadEndpointsResponse.FromString(await watcher.next_response() or b"")
    assert [e.resource_version for e in response.events] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert watcher.queued_events == 0


async def test_responses_respect_the_message_limit_without_splitting_revisions() -> None:
    size = len(bookmark_entry(1))
    watcher = Watcher(WatcherLimits(max_message_bytes=size * 3))
    watcher.push(1, entries(1, 2))
    watcher.push(2, entries(2, 2))
    first = WatchWorkloadEndpointsResponse.FromString(await watcher.next_response() or b"")
    second = WatchWorkloadEndpointsResponse.FromString(await watcher.next_response() or b"")
    assert [e.resource_version for e in first.events] == [1, 1]
    assert [e.resource_version for e in second.events] == [2, 2]
    assert not first.fragment
    assert not second.fragment


async def test_a_revision_larger_than_a_message_is_sent_in_fragments() -> None:
    size = len(bookmark_entry(1))
    watcher = Watcher(WatcherLimits(max_message_bytes=size * 2))
    watcher.push(1, entries(1, 5))
    parts = [WatchWorkloadEndpointsResponse.FromString(await watcher.next_response() or b"") for _ in range(3)]
    assert [len(p.events) for p in parts] == [2, 2, 1]
    assert [p.fragment for p in parts] == [True, True, False]


async def test_past_the_bound_the_watcher_is_cut_off_at_a_revision_boundary() -> None:
    watcher = Watcher(WatcherLimits(max_events=5))
    watcher.push(1, entries(1, 8))  # one revision over the bound is still delivered
    assert not watcher.ended.is_set()
    watcher.push(2, entries(2, 1))
    assert watcher.ended.is_set()
    assert isinstance(watcher.error, ResourceExhausted)
    assert watcher.error.reason == "WATCHER_TOO_SLOW"
    assert watcher.queued_events == 0  # the buffer is freed at once
    assert await watcher.next_response() is None


async def test_finish_sends_what_is_queued_then_ends() -> None:
    watcher = Watcher(WatcherLimits())
    watcher.push(1, entries(1, 1))
    watcher.finish(Unavailable("bye", reason="SHUTTING_DOWN"))
    watcher.push(2, entries(2, 1))  # nothing new is taken once finishing
    response = WatchWorkloadEndpointsResponse.FromString(await watcher.next_response() or b"")
    assert [e.resource_version for e in response.events] == [1]
    assert await watcher.next_response() is None
    assert watcher.error is not None
    assert watcher.error.reason == "SHUTTING_DOWN"
