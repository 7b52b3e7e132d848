"""A live local copy of the objects matching a watch filter, that keeps itself in sync.

`MaterializedView` runs one watch stream at a time and applies its events to `objects`. When the
stream breaks (server restart, network, WATCHER_TOO_SLOW, SHUTTING_DOWN) it reconnects by itself
and resumes: from the last revision it holds completely, with the versions of every object it
holds, so the server can replay what it missed or, when its history no longer reaches back, send
just the difference. The caller sees one uninterrupted sequence of events.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import grpc

from epsync.errors import EpsyncError, InvalidArgument, OutOfRange, PermissionDenied, rpc_error
from epsync.model.kinds import MAX_KNOWN_VERSIONS
from epsync.v1.profile_pb2 import Profile
from epsync.v1.watch_pb2 import ADDED, BOOKMARK, DELETED, MODIFIED, EventType
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

log = logging.getLogger(__name__)

R = TypeVar("R", WorkloadEndpoint, Profile)
R_co = TypeVar("R_co", WorkloadEndpoint, Profile, covariant=True)

EVENT_NAMES: Mapping[int, str] = {ADDED: "ADDED", MODIFIED: "MODIFIED", DELETED: "DELETED", BOOKMARK: "BOOKMARK"}


class _Event(Protocol[R_co]):
    @property
    def type(self) -> EventType.ValueType: ...
    @property
    def object(self) -> R_co: ...
    @property
    def resource_version(self) -> int: ...
    @property
    def initial_events_end(self) -> bool: ...
    @property
    def store_id(self) -> str: ...


class _Response(Protocol[R_co]):
    @property
    def events(self) -> Sequence[_Event[R_co]]: ...
    @property
    def fragment(self) -> bool: ...


class _Request(Protocol):
    resource_version: int
    send_initial_events: bool
    allow_bookmarks: bool
    store_id: str

    @property
    def known_resource_versions(self) -> MutableMapping[str, int]: ...


Q = TypeVar("Q", bound=_Request)


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[R]):
    type: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    object: R | None
    resource_version: int
    initial_events_end: bool = False


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial`, doubling up to `maximum`, each with +-50% jitter."""

    initial: float = 0.05
    maximum: float = 5.0


# Errors that resuming cannot fix: the request itself is wrong.
_FATAL = (InvalidArgument, PermissionDenied)


class MaterializedView(Generic[R, Q]):
    """See the module docs. Iterate it to run it; `objects`, `revision` and `synced` are its state."""

    def __init__(
        self,
        open_stream: Callable[[Q], AsyncIterator[_Response[R]]],
        request: Q,
        key_of: Callable[[R], str],
        *,
        backoff: Backoff | None = None,
        on_stream_end: Callable[[EpsyncError | None, int], None] | None = None,
    ) -> None:
        self._open: Callable[[Q], AsyncIterator[_Response[R]]] = open_stream
        self._template = request
        self._key_of: Callable[[R], str] = key_of
        self._backoff = backoff or Backoff()
        # Told (the error, or None for a stream the server closed, and the revision it resumes from) each
        # time a stream ends, before the retry; without it, the view logs a warning.
        self._on_stream_end = on_stream_end
        self.objects: dict[str, R] = {}
        self.revision = 0  # every event up to here is applied (0: not in sync yet)
        self.synced = False  # the current stream has sent its initial_events_end bookmark
        self.store_id = ""  # the store `objects` and `revision` come from, as the server named it
        self.reconnects = 0
        self._synced_event = asyncio.Event()

    async def wait_synced(self) -> None:
        """Return once the view is in sync (it must be iterated elsewhere)."""
        await self._synced_event.wait()

    def _request(self) -> Q:
        request = type(self._template)()
        request.CopyFrom(self._template)  # type: ignore[attr-defined]
        if self.revision or self.objects:
            # Resume: replay after what we hold completely, or else the difference to what we hold.
            request.send_initial_events = False
            request.resource_version = self.revision
            request.store_id = self.store_id
            request.known_resource_versions.clear()
            if len(self.objects) <= MAX_KNOWN_VERSIONS:  # more: by revision alone, or a re-list if history is gone
                request.known_resource_versions.update(
                    {key: obj.metadata.resource_version for key, obj in self.objects.items()}
                )
        return request

    async def __aiter__(self) -> AsyncIterator[WatchEvent[R]]:
        delay = self._backoff.initial
        while True:
            request = self._request()
            try:
                async for response in self._open(request):
                    last = 0
                    for event in response.events:
                        yield self._apply(event)
                        last = max(last, event.resource_version)
                        if self.synced:
                            delay = self._backoff.initial
                    if self.synced and not response.fragment:
                        self.revision = max(self.revision, last)
                error: EpsyncError | None = None
            except EpsyncError as raised:
                error = raised
            if isinstance(error, _FATAL):
                raise error
            if isinstance(error, OutOfRange) and error.reason == "RESOURCE_VERSION_TOO_OLD":
                if error.metadata.get("storeId", self.store_id) != self.store_id:
                    # Another store (wiped, or another cluster): what is held means nothing there. Drop it,
                    # telling the consumer, and start over from the new store's initial state.
                    log.warning("the server's store is another one (%s): re-listing", error.metadata["storeId"])
                    for obj in self.objects.values():
                        yield WatchEvent("DELETED", obj, 0)
                    self.objects.clear()
                    self.revision, self.store_id = 0, ""
                elif not self.objects:
                    self.revision = 0  # nothing held: start over with the initial state
            self.synced = False
            self.reconnects += 1
            if self._on_stream_end is not None:
                self._on_stream_end(error, self.revision)
            else:
                # A warning: an agent that cannot reach its server must say so, not wait quietly.
                log.warning(
                    "watch stream ended (%s); resuming from revision %d, retrying", error or "closed", self.revision
                )
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self._backoff.maximum)

    def _apply(self, event: _Event[R]) -> WatchEvent[R]:
        if event.type == BOOKMARK:
            if event.initial_events_end:
                self.synced = True
                self.store_id = event.store_id or self.store_id
                self._synced_event.set()
            if self.synced:
                self.revision = max(self.revision, event.resource_version)
            return WatchEvent("BOOKMARK", None, event.resource_version, event.initial_events_end)
        obj = event.object
        key = self._key_of(obj)
        if event.type == DELETED:
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        return WatchEvent(EVENT_NAMES.get(event.type, str(event.type)), obj, event.resource_version)


P = TypeVar("P")


def grpc_stream(call: Callable[[Q], grpc.aio.UnaryStreamCall[Q, P]]) -> Callable[[Q], AsyncIterator[P]]:
    """Adapt a generated unary-stream stub method into what `MaterializedView` opens."""

    async def open_stream(request: Q) -> AsyncIterator[P]:
        stream = call(request)
        try:
            async for response in stream:
                yield response
        except grpc.aio.AioRpcError as error:
            raise rpc_error(error) from None
        finally:
            stream.cancel()

    return open_stream
