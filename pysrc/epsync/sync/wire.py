"""Watch events built as protobuf wire bytes, so each is serialised once for every watcher.

A watch response is `repeated <Kind>WatchEvent events = 1; bool fragment = 2;`. On the wire a
repeated message field is just its entries one after another, each `tag, length, bytes`; so a
response is the concatenation of pre-encoded entries, and the same entry bytes can go into the
responses of any number of watchers. The servicer is registered with an identity serializer and
hands grpc.aio these bytes as they are.

Objects are stored without their resource_version (the store's revision is the truth), and
protobuf defines concatenated encodings of a message as their merge: appending an encoded
`metadata { resource_version: r }` to the stored bytes yields the object with resource_version r,
with no decode and re-encode.
"""

from __future__ import annotations

from epsync.v1.watch_pb2 import ADDED, BOOKMARK, DELETED, MODIFIED, EventType

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "MODIFIED",
    "EventType",
    "bookmark_entry",
    "event_entry",
    "join_response",
    "list_response",
    "object_response",
    "write_batch_result",
    "write_result",
]

# Field numbers of <Kind>WatchEvent and of the response, the same for every kind.
_EVENTS_FIELD = 1
_FRAGMENT_FIELD = 2
_EVENT_TYPE, _EVENT_OBJECT, _EVENT_REVISION, _EVENT_INITIAL_END, _EVENT_STORE_ID = 1, 2, 3, 4, 5
# Fields of every kind's List response: `repeated <Kind> items = 1; string next_page_token = 2;
# int64 resource_version = 3;`.
_LIST_ITEMS, _LIST_NEXT_PAGE_TOKEN, _LIST_RESOURCE_VERSION = 1, 2, 3
# Every kind's Get/Create/Update/Delete response: `<Kind> object = 1;` and, for a Delete,
# `int64 resource_version = 2;`.
_RESPONSE_OBJECT, _RESPONSE_REVISION = 1, 2
# WriteWorkloadEndpointsResponse: request_id, status, the object, the write's revision.
_WRITE_REQUEST_ID, _WRITE_STATUS, _WRITE_OBJECT, _WRITE_REVISION, _WRITE_BATCH = 1, 2, 3, 4, 5
# ObjectMeta is field 1 of every resource; resource_version is field 4 of ObjectMeta.
_OBJECT_METADATA, _META_RESOURCE_VERSION = 1, 4

_VARINT, _LENGTH_DELIMITED = 0, 2
FRAGMENT_FLAG = bytes([(_FRAGMENT_FIELD << 3) | _VARINT, 1])


def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Tags and lengths (every field of every response) are under 2**14: looked up, not computed, some 0.5 MiB.
_SMALL_VARINTS = tuple(_encode_varint(value) for value in range(1 << 14))


def varint(value: int) -> bytes:
    """Base-128 varint; negative int64 values take ten bytes, as protobuf encodes them."""
    if 0 <= value < 16384:
        return _SMALL_VARINTS[value]
    return _encode_varint(value)


def _tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _tag(field, _LENGTH_DELIMITED) + varint(len(payload)) + payload


def _varint_field(field: int, value: int) -> bytes:
    return _tag(field, _VARINT) + varint(value) if value else b""


def object_with_version(stored: bytes, resource_version: int) -> bytes:
    """The encoded object `stored` (as the datastore keeps it) with `metadata.resource_version` set."""
    meta = _varint_field(_META_RESOURCE_VERSION, resource_version)
    return stored + _length_delimited(_OBJECT_METADATA, meta)


def event_entry(event_type: EventType.ValueType, encoded_object: bytes, revision: int) -> bytes:
    """One `events` entry of a response: the event, already framed as field 1."""
    event = (
        _varint_field(_EVENT_TYPE, event_type)
        + _length_delimited(_EVENT_OBJECT, encoded_object)
        + _varint_field(_EVENT_REVISION, revision)
    )
    return _length_delimited(_EVENTS_FIELD, event)


def bookmark_entry(revision: int, *, initial_events_end: bool = False, store_id: str = "") -> bytes:
    """A BOOKMARK event entry; the one that ends the initial events names the store (`store_id`)."""
    event = (
        _varint_field(_EVENT_TYPE, BOOKMARK)
        + _varint_field(_EVENT_REVISION, revision)
        + _varint_field(_EVENT_INITIAL_END, int(initial_events_end))
    )
    if store_id:
        event += _length_delimited(_EVENT_STORE_ID, store_id.encode())
    return _length_delimited(_EVENTS_FIELD, event)


def join_response(entries: list[bytes], *, fragment: bool = False) -> bytes:
    """A whole response message from event entries."""
    body = b"".join(entries)
    return body + FRAGMENT_FLAG if fragment else body


def list_response(objects: list[bytes], next_page_token: str, resource_version: int) -> bytes:
    """A whole List response from encoded objects (each already carrying its resource_version)."""
    items = b"".join([_length_delimited(_LIST_ITEMS, obj) for obj in objects])
    token = _length_delimited(_LIST_NEXT_PAGE_TOKEN, next_page_token.encode()) if next_page_token else b""
    return items + token + _varint_field(_LIST_RESOURCE_VERSION, resource_version)


def object_response(encoded_object: bytes | None, resource_version: int = 0) -> bytes:
    """A Get, Create, Update or Delete response: the object (None: absent) and, for a Delete, its revision."""
    body = _length_delimited(_RESPONSE_OBJECT, encoded_object) if encoded_object is not None else b""
    return body + _varint_field(_RESPONSE_REVISION, resource_version)


def write_result(request_id: str, status: bytes, encoded_object: bytes | None, resource_version: int) -> bytes:
    """A WriteWorkloadEndpointsResponse: `status` is an encoded google.rpc.Status (empty: OK, code 0)."""
    body = _length_delimited(_WRITE_REQUEST_ID, request_id.encode()) if request_id else b""
    body += _length_delimited(_WRITE_STATUS, status)
    if encoded_object is not None:
        body += _length_delimited(_WRITE_OBJECT, encoded_object)
    return body + _varint_field(_WRITE_REVISION, resource_version)


def write_batch_result(request_id: str, results: list[bytes]) -> bytes:
    """The response to a batch: OK, and each write's own WriteWorkloadEndpointsResponse (`write_result`) in order."""
    return write_result(request_id, b"", None, 0) + b"".join([_length_delimited(_WRITE_BATCH, r) for r in results])
