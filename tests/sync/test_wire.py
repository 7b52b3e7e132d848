"""Pre-encoded watch responses decode to exactly the messages they stand for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from epsync.model.kinds import WORKLOAD_ENDPOINTS
from epsync.sync.wire import (
    ADDED,
    BOOKMARK,
    DELETED,
    bookmark_entry,
    event_entry,
    join_response,
    object_with_version,
    varint,
)
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsResponse, WorkloadEndpointWatchEvent
from tests.factories import endpoint


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    message = WorkloadEndpointWatchEvent(resource_version=value)
    assert message.SerializeToString() == (b"\x18" + varint(value) if value else b"")


def test_object_with_version_merges_the_resource_version_into_stored_bytes() -> None:
    original = endpoint("web-1", labels={"app": "web"})
    original.metadata.resource_version = 42
    stored = WORKLOAD_ENDPOINTS.encode(original)  # as the datastore keeps it: no resource_version
    decoded = type(original).FromString(object_with_version(stored, 42))
    assert decoded == original


def test_a_response_of_entries_decodes_to_the_events() -> None:
    web = endpoint("web-1")
    stored = WORKLOAD_ENDPOINTS.encode(web)
    entries = [
        event_entry(ADDED, object_with_version(stored, 7), 7),
        event_entry(DELETED, object_with_version(stored, 9), 9),
        bookmark_entry(9, initial_events_end=True),
    ]
    response = WatchWorkloadEndpointsResponse.FromString(join_response(entries, fragment=True))
    assert response.fragment
    assert [(e.type, e.resource_version, e.object.metadata.resource_version) for e in response.events] == [
        (ADDED, 7, 7),
        (DELETED, 9, 9),
        (BOOKMARK, 9, 0),
    ]
    assert response.events[0].object.metadata.name == "web-1"
    assert not response.events[0].initial_events_end
    assert response.events[2].initial_events_end
    assert not response.events[2].HasField("object")
