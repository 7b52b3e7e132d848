"""ProfileService: thin translation between requests and the registry and cache."""

from __future__ import annotations

from epsync._core import KnownVersions
from epsync.model.selectors import parse_selector_field
from epsync.server.paging import filter_fingerprint, page_bytes, page_size
from epsync.server.resource_servicer import (
    Context,
    ResourceServicer,
    deleted_response,
    require_name,
    stored_response,
)
from epsync.server.status import unary_errors
from epsync.server.watch_stream import serve_watch
from epsync.sync.profile_hub import ProfileWatchHub
from epsync.v1 import profile_service_pb2 as pb
from epsync.v1.profile_pb2 import Profile


class ProfileServicer(ResourceServicer[Profile, ProfileWatchHub]):
    """Registered from the service descriptor (`server.registration`): see WorkloadEndpointServicer."""

    @unary_errors
    async def GetProfile(self, request: pb.GetProfileRequest, context: Context) -> pb.GetProfileResponse:
        await self._wait_for(request.min_resource_version)
        return pb.GetProfileResponse(profile=self._registry.get(require_name(request.name)))

    @unary_errors
    async def ListProfiles(self, request: pb.ListProfilesRequest, context: Context) -> pb.ListProfilesResponse:
        await self._wait_for(request.min_resource_version)
        selector = parse_selector_field(request.label_selector, "label_selector")
        limit = page_size(request.page_size, default=self._config.default_page_size, maximum=self._config.max_page_size)
        fingerprint = filter_fingerprint("profiles", str(selector or ""))
        position = self._page_tokens.position(request.page_token, fingerprint, 1, self._cache.revision)
        after = position.after[0] if position.after else None
        page = self._cache.list_profiles(
            selector=selector, after=after, limit=limit, max_bytes=page_bytes(self._config.response_bytes)
        )
        last = [page.items[-1].metadata.name] if page.items else []
        next_token = self._page_tokens.issue(page.more, last, fingerprint, position.revision)
        return pb.ListProfilesResponse(items=page.items, next_page_token=next_token, resource_version=position.revision)

    # Writes answer in wire bytes (registered pre-encoded), as the endpoint writes do.

    @unary_errors
    async def CreateProfile(self, request: pb.CreateProfileRequest, context: Context) -> bytes:
        return stored_response(await self._registry.create(request.profile))

    @unary_errors
    async def UpdateProfile(self, request: pb.UpdateProfileRequest, context: Context) -> bytes:
        return stored_response(await self._registry.update(request.profile, allow_missing=request.allow_missing))

    @unary_errors
    async def DeleteProfile(self, request: pb.DeleteProfileRequest, context: Context) -> bytes:
        deleted = await self._registry.delete(
            require_name(request.name),
            resource_version=request.resource_version,
            uid=request.uid,
            allow_missing=request.allow_missing,
        )
        return deleted_response(deleted)

    async def WatchProfiles(self, request: pb.WatchProfilesRequest, context: Context, known: KnownVersions) -> None:
        await serve_watch(self._hub, request, known, context, self._wait_until_watchable)
