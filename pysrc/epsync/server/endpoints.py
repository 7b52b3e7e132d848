"""WorkloadEndpointService: thin translation between requests and the registry and cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

from epsync._core import KnownVersions
from epsync.model.kinds import endpoint_key
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
from epsync.server.write_stream import serve_write_stream
from epsync.sync.endpoint_hub import EndpointWatchHub
from epsync.sync.wire import list_response, object_with_version
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint


class WorkloadEndpointServicer(ResourceServicer[WorkloadEndpoint, EndpointWatchHub]):
    """Registered from the service descriptor (`server.registration`), not the generated base class,
    because the watch and the List answer in pre-encoded bytes rather than response messages."""

    async def WatchWorkloadEndpoints(
        self, request: pb.WatchWorkloadEndpointsRequest, context: Context, known: KnownVersions
    ) -> None:
        await serve_watch(self._hub, request, known, context, self._wait_until_watchable)

    @unary_errors
    async def GetWorkloadEndpoint(
        self, request: pb.GetWorkloadEndpointRequest, context: Context
    ) -> pb.GetWorkloadEndpointResponse:
        await self._wait_for(request.min_resource_version)
        key = endpoint_key(request.namespace, require_name(request.name))
        return pb.GetWorkloadEndpointResponse(workload_endpoint=self._registry.get(key))

    @unary_errors
    async def ListWorkloadEndpoints(self, request: pb.ListWorkloadEndpointsRequest, context: Context) -> bytes:
        """Answered in wire bytes (registered pre-encoded): the cache holds endpoints encoded."""
        await self._wait_for(request.min_resource_version)
        selector = parse_selector_field(request.label_selector, "label_selector")
        limit = page_size(request.page_size, default=self._config.default_page_size, maximum=self._config.max_page_size)
        fingerprint = filter_fingerprint("workloadendpoints", request.namespace, request.node, str(selector or ""))
        position = self._page_tokens.position(request.page_token, fingerprint, 2, self._cache.revision)
        after = (position.after[0], position.after[1]) if position.after else None
        page = self._cache.list_endpoints(
            namespace=request.namespace,
            node=request.node,
            selector=selector,
            after=after,
            limit=limit,
            max_bytes=page_bytes(self._config.response_bytes),
        )
        last = [page.items[-1].namespace, page.items[-1].name] if page.items else []
        next_token = self._page_tokens.issue(page.more, last, fingerprint, position.revision)
        items = [object_with_version(item.stored, item.resource_version) for item in page.items]
        return list_response(items, next_token, position.revision)

    # Writes answer in wire bytes (registered pre-encoded): the stored bytes with their revision, never decoded.

    @unary_errors
    async def CreateWorkloadEndpoint(self, request: pb.CreateWorkloadEndpointRequest, context: Context) -> bytes:
        return stored_response(await self._registry.create(request.workload_endpoint))

    @unary_errors
    async def UpdateWorkloadEndpoint(self, request: pb.UpdateWorkloadEndpointRequest, context: Context) -> bytes:
        refused = self.authorizer.create_refused(context) if self.authorizer is not None else ""
        updated = await self._registry.update(
            request.workload_endpoint, allow_missing=request.allow_missing, create_refused=refused
        )
        return stored_response(updated)

    @unary_errors
    async def DeleteWorkloadEndpoint(self, request: pb.DeleteWorkloadEndpointRequest, context: Context) -> bytes:
        key = endpoint_key(request.namespace, require_name(request.name))
        deleted = await self._registry.delete(
            key, resource_version=request.resource_version, uid=request.uid, allow_missing=request.allow_missing
        )
        return deleted_response(deleted)

    # A coroutine answering through context.write, not an async generator: grpc.aio cancels it wherever it
    # waits, so a cancelled stream cleans up at once.
    @unary_errors  # the stream's own failures (a request that does not parse); each write's are in its response
    async def WriteWorkloadEndpoints(
        self, request_iterator: AsyncIterator[pb.WriteWorkloadEndpointsRequest], context: Context
    ) -> None:
        authorizer = self.authorizer
        await serve_write_stream(
            self._registry,
            request_iterator,
            context.write,
            authorize=authorizer.write_check(context) if authorizer is not None else None,
            create_refused=authorizer.create_refused(context) if authorizer is not None else "",
        )
