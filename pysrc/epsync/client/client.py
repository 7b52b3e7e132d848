"""An asyncio client for epsync: typed calls, paging handled, errors raised as `EpsyncError`s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar

import grpc

from epsync.client.targets import channel_target, list_authority
from epsync.client.view import Backoff, MaterializedView, grpc_stream
from epsync.errors import EpsyncError, Unavailable, rpc_error
from epsync.model.kinds import DEFAULT_NAMESPACE, endpoint_key
from epsync.v1 import profile_service_pb2 as profile_pb
from epsync.v1 import profile_service_pb2_grpc as profile_grpc
from epsync.v1 import status_service_pb2 as status_pb
from epsync.v1 import status_service_pb2_grpc as status_grpc
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1 import workload_endpoint_service_pb2_grpc as wep_grpc
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

DEFAULT_TARGET = "127.0.0.1:50051"
T = TypeVar("T")
Item_co = TypeVar("Item_co", covariant=True)
Req = TypeVar("Req", bound="_PageRequest")


async def _call(awaitable: Awaitable[T]) -> T:
    """Await one RPC, turning a failed status back into the `EpsyncError` the server raised."""
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        raise rpc_error(error) from None


# The largest message the server sends or takes by default (`epsync serve`'s max_message_bytes).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ClientTls:
    """TLS to the server: the CA bundle its certificate chains to (None: the system's roots), and
    for mutual TLS this client's certificate and key (an identity, SPEC §8)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate and its key go together")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return None if path is None else path.read_bytes()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


class Client:
    """Talks to epsync. Use as `async with Client("host:port") as client:`.

    Several replicas: `Client(["10.0.0.1:50051", "10.0.0.2:50051"])` (or one comma-separated
    string) uses the first that answers and fails over to the others by itself (see
    `epsync.client.targets`); watches resume on the new replica with what they hold. `tls`
    connects with TLS (`ClientTls`); without it the connection is plaintext.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float | None = 30.0,
        tls: ClientTls | None = None,
    ) -> None:
        self.target = channel_target(target)
        self.timeout = timeout
        # Its own connection, as a Go ClientConn is: by default grpc shares one between every channel
        # of the process to the same target, so that two clients would fail and reconnect together.
        # It receives what the server may send (16 MiB, as the Go client), not grpc's default 4 MiB.
        options: list[tuple[str, int | str]] = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        authority = list_authority(self.target)
        if authority is not None:
            options.append(("grpc.default_authority", authority))
        if tls is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, tls.credentials(), options=options)
        self._endpoints = wep_grpc.WorkloadEndpointServiceStub(self._channel)
        self._profiles = profile_grpc.ProfileServiceStub(self._channel)
        self._status = status_grpc.StatusServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def wait_for_connection(self, within: float) -> None:
        """Return once the channel is connected to a server; raise Unavailable if it is not within `within`
        seconds. Calls do not need it (they connect by themselves); it bounds how long a start may wait."""
        try:
            async with asyncio.timeout(within):
                await self._channel.channel_ready()
        except TimeoutError:
            raise Unavailable(
                f"cannot connect to {self.target} within {within:g} s: is the address right, and is epsync serving?"
            ) from None

    # --- workload endpoints -------------------------------------------------------------------

    async def get_endpoint(self, name: str, namespace: str = DEFAULT_NAMESPACE) -> WorkloadEndpoint:
        request = wep_pb.GetWorkloadEndpointRequest(namespace=namespace, name=name)
        response = await _call(self._endpoints.GetWorkloadEndpoint(request, timeout=self.timeout))
        return response.workload_endpoint

    async def list_endpoints_page(
        self, request: wep_pb.ListWorkloadEndpointsRequest
    ) -> wep_pb.ListWorkloadEndpointsResponse:
        return await _call(self._endpoints.ListWorkloadEndpoints(request, timeout=self.timeout))

    async def list_endpoints(
        self, *, namespace: str = "", node: str = "", selector: str = "", page_size: int = 0
    ) -> AsyncIterator[WorkloadEndpoint]:
        """Every matching endpoint, fetching page after page."""
        request = wep_pb.ListWorkloadEndpointsRequest(
            namespace=namespace, node=node, label_selector=selector, page_size=page_size
        )
        async for item in _all_pages(request, self.list_endpoints_page):
            yield item

    async def create_endpoint(self, endpoint: WorkloadEndpoint) -> WorkloadEndpoint:
        request = wep_pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint)
        return (await _call(self._endpoints.CreateWorkloadEndpoint(request, timeout=self.timeout))).workload_endpoint

    async def update_endpoint(self, endpoint: WorkloadEndpoint, *, allow_missing: bool = False) -> WorkloadEndpoint:
        request = wep_pb.UpdateWorkloadEndpointRequest(workload_endpoint=endpoint, allow_missing=allow_missing)
        return (await _call(self._endpoints.UpdateWorkloadEndpoint(request, timeout=self.timeout))).workload_endpoint

    async def delete_endpoint(
        self,
        name: str,
        namespace: str = DEFAULT_NAMESPACE,
        *,
        resource_version: int = 0,
        uid: str = "",
        allow_missing: bool = False,
    ) -> wep_pb.DeleteWorkloadEndpointResponse:
        request = wep_pb.DeleteWorkloadEndpointRequest(
            namespace=namespace, name=name, resource_version=resource_version, uid=uid, allow_missing=allow_missing
        )
        return await _call(self._endpoints.DeleteWorkloadEndpoint(request, timeout=self.timeout))

    async def write_endpoints(
        self,
        requests: AsyncIterable[wep_pb.WriteWorkloadEndpointsRequest] | Iterable[wep_pb.WriteWorkloadEndpointsRequest],
    ) -> AsyncIterator[wep_pb.WriteWorkloadEndpointsResponse]:
        """Many writes on one stream: one response per request, in request order, each with its own `status`.

        Writes are pipelined (up to 1,000 unanswered; the server then stops reading) and share group
        commits. A failed write fails alone; a broken stream raises `EpsyncError`, and writes it had not
        answered have an unknown outcome. Closing the iterator early (`contextlib.aclosing`) cancels the
        stream. No deadline applies: a stream lives as long as its writer.
        """
        source = aiter(requests) if isinstance(requests, AsyncIterable) else iter(requests)
        call = self._endpoints.WriteWorkloadEndpoints(source)
        try:
            while isinstance(response := await _call(call.read()), wep_pb.WriteWorkloadEndpointsResponse):
                yield response
        finally:
            call.cancel()  # ends the stream if the caller stopped early; a no-op once it has finished

    # --- status -------------------------------------------------------------------------------

    async def get_status(self, *, top_groups: int = 0) -> status_pb.GetStatusResponse:
        """The server process's state: datastore health, revisions, watchers by filter, limits, skipped values."""
        request = status_pb.GetStatusRequest(top_groups=top_groups)
        return await _call(self._status.GetStatus(request, timeout=self.timeout))

    # --- profiles -----------------------------------------------------------------------------

    async def get_profile(self, name: str) -> Profile:
        response = await _call(self._profiles.GetProfile(profile_pb.GetProfileRequest(name=name), timeout=self.timeout))
        return response.profile

    async def list_profiles_page(self, request: profile_pb.ListProfilesRequest) -> profile_pb.ListProfilesResponse:
        return await _call(self._profiles.ListProfiles(request, timeout=self.timeout))

    async def list_profiles(self, *, selector: str = "", page_size: int = 0) -> AsyncIterator[Profile]:
        request = profile_pb.ListProfilesRequest(label_selector=selector, page_size=page_size)
        async for item in _all_pages(request, self.list_profiles_page):
            yield item

    async def create_profile(self, profile: Profile) -> Profile:
        request = profile_pb.CreateProfileRequest(profile=profile)
        return (await _call(self._profiles.CreateProfile(request, timeout=self.timeout))).profile

    async def update_profile(self, profile: Profile, *, allow_missing: bool = False) -> Profile:
        request = profile_pb.UpdateProfileRequest(profile=profile, allow_missing=allow_missing)
        return (await _call(self._profiles.UpdateProfile(request, timeout=self.timeout))).profile

    async def delete_profile(
        self, name: str, *, resource_version: int = 0, uid: str = "", allow_missing: bool = False
    ) -> profile_pb.DeleteProfileResponse:
        request = profile_pb.DeleteProfileRequest(
            name=name, resource_version=resource_version, uid=uid, allow_missing=allow_missing
        )
        return await _call(self._profiles.DeleteProfile(request, timeout=self.timeout))

    # --- either kind --------------------------------------------------------------------------

    async def create(self, obj: WorkloadEndpoint | Profile) -> WorkloadEndpoint | Profile:
        if isinstance(obj, WorkloadEndpoint):
            return await self.create_endpoint(obj)
        return await self.create_profile(obj)

    async def apply(self, obj: WorkloadEndpoint | Profile) -> WorkloadEndpoint | Profile:
        """Create, else replace, as `calicoctl apply` does: last writer wins, no version precondition."""
        if isinstance(obj, WorkloadEndpoint):
            endpoint = WorkloadEndpoint()
            endpoint.CopyFrom(obj)
            endpoint.metadata.resource_version = 0
            return await self.update_endpoint(endpoint, allow_missing=True)
        profile = Profile()
        profile.CopyFrom(obj)
        profile.metadata.resource_version = 0
        return await self.update_profile(profile, allow_missing=True)

    # --- watches ------------------------------------------------------------------------------

    def watch(
        self,
        *,
        namespace: str = "",
        node: str = "",
        selector: str = "",
        allow_bookmarks: bool = True,
        backoff: Backoff | None = None,
        on_stream_end: Callable[[EpsyncError | None, int], None] | None = None,
    ) -> MaterializedView[WorkloadEndpoint, wep_pb.WatchWorkloadEndpointsRequest]:
        """A live view of the matching endpoints, keyed "namespace/name"; iterate it to run it.

        It starts with the current state, then follows every change, and resumes by itself
        across disconnects and server restarts (see `epsync.client.view`).
        """
        request = wep_pb.WatchWorkloadEndpointsRequest(
            namespace=namespace,
            node=node,
            label_selector=selector,
            send_initial_events=True,
            allow_bookmarks=allow_bookmarks,
        )
        stream = grpc_stream(self._endpoints.WatchWorkloadEndpoints)
        return MaterializedView(stream, request, _endpoint_key, backoff=backoff, on_stream_end=on_stream_end)

    def watch_profiles(
        self,
        *,
        selector: str = "",
        allow_bookmarks: bool = True,
        backoff: Backoff | None = None,
        on_stream_end: Callable[[EpsyncError | None, int], None] | None = None,
    ) -> MaterializedView[Profile, profile_pb.WatchProfilesRequest]:
        """A live view of the matching profiles, keyed by name; see `watch`."""
        request = profile_pb.WatchProfilesRequest(
            label_selector=selector, send_initial_events=True, allow_bookmarks=allow_bookmarks
        )
        stream = grpc_stream(self._profiles.WatchProfiles)
        return MaterializedView(stream, request, _profile_key, backoff=backoff, on_stream_end=on_stream_end)


def _endpoint_key(endpoint: WorkloadEndpoint) -> str:
    return endpoint_key(endpoint.metadata.namespace or DEFAULT_NAMESPACE, endpoint.metadata.name)


def _profile_key(profile: Profile) -> str:
    return profile.metadata.name


class _PageRequest(Protocol):
    page_token: str


class _PageResponse(Protocol[Item_co]):
    @property
    def items(self) -> Sequence[Item_co]: ...
    @property
    def next_page_token(self) -> str: ...


async def _all_pages(request: Req, fetch: Callable[[Req], Awaitable[_PageResponse[Item_co]]]) -> AsyncIterator[Item_co]:
    """Follow next_page_token until the listing ends; the request is reused with each new token."""
    while True:
        response = await fetch(request)
        for item in response.items:
            yield item
        if not response.next_page_token:
            return
        request.page_token = response.next_page_token


__all__ = ["DEFAULT_TARGET", "Client", "EpsyncError"]
