"""The Rust reader of a watch request's known versions (`split_known_versions`) against the protobuf
runtime: for any request, the map it reads plus the rest parsed as usual is the request the runtime
parses; bytes the runtime accepts, it accepts."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from epsync._core import split_known_versions
from epsync.v1.profile_service_pb2 import WatchProfilesRequest
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest

INT64 = st.integers(-(2**63), 2**63 - 1)
FIELD = WatchWorkloadEndpointsRequest.DESCRIPTOR.fields_by_name["known_resource_versions"].number

requests = st.builds(
    WatchWorkloadEndpointsRequest,
    namespace=st.text(max_size=10),
    node=st.text(max_size=10),
    label_selector=st.text(max_size=20),
    resource_version=INT64,
    send_initial_events=st.booleans(),
    allow_bookmarks=st.booleans(),
    known_resource_versions=st.dictionaries(st.text(max_size=12), INT64, max_size=20),
    store_id=st.text(max_size=8),
)


def _rebuilt(raw: bytes, message_type: type[WatchWorkloadEndpointsRequest] = WatchWorkloadEndpointsRequest) -> object:
    rest, known = split_known_versions(raw, FIELD)
    message = message_type.FromString(rest)
    assert not message.known_resource_versions
    message.known_resource_versions.update(dict(known.items()))
    assert len(known) == len(message.known_resource_versions)
    assert dict(known.items()) == dict(message.known_resource_versions)
    return message


@given(requests)
def test_a_request_comes_apart_and_back_together(request: WatchWorkloadEndpointsRequest) -> None:
    assert _rebuilt(request.SerializeToString()) == request


@given(requests, requests)
def test_concatenated_requests_merge_as_protobuf_merges_them(
    first: WatchWorkloadEndpointsRequest, second: WatchWorkloadEndpointsRequest
) -> None:
    # Concatenated messages are one merged message; a map key sent twice takes the later value.
    raw = first.SerializeToString() + second.SerializeToString()
    assert _rebuilt(raw) == WatchWorkloadEndpointsRequest.FromString(raw)


@given(st.binary(max_size=64))
def test_bytes_the_runtime_accepts_it_accepts_alike(raw: bytes) -> None:
    try:
        expected = WatchWorkloadEndpointsRequest.FromString(raw)
    except DecodeError:
        return
    assert _rebuilt(raw) == expected


def test_negative_versions_are_listed_sorted_and_counted() -> None:
    request = WatchProfilesRequest(known_resource_versions={"c": -1, "a": -5, "b": 3, "d": -2})
    field = WatchProfilesRequest.DESCRIPTOR.fields_by_name["known_resource_versions"].number
    _, known = split_known_versions(request.SerializeToString(), field)
    assert known.negative(2) == (["a", "c"], 3)
    assert known.negative(10) == (["a", "c", "d"], 3)


def test_malformed_bytes_are_a_value_error() -> None:
    entry = WatchWorkloadEndpointsRequest(known_resource_versions={"ns/a": 1}).SerializeToString()
    with pytest.raises(ValueError, match="past the end"):
        split_known_versions(entry[:-1], FIELD)
