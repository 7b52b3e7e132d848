"""What every resource servicer shares: its registry, the cache, the config and request helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc

from epsync.errors import FieldViolation, InvalidArgument, OutOfRange
from epsync.server.authorization import Authorizer
from epsync.server.config import ServerConfig
from epsync.server.paging import PageTokens
from epsync.server.registry import Deleted, Registry
from epsync.store.base import Record
from epsync.store.feed import RevisionNotReached
from epsync.sync.cache import ResourceCache
from epsync.sync.wire import object_response, object_with_version
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", WorkloadEndpoint, Profile)
H = TypeVar("H")  # the kind's watch hub


def stored_response(record: Record) -> bytes:
    """A Create or Update response: the stored object with its resource_version."""
    return object_response(object_with_version(record.value, record.mod_revision))


def deleted_response(deleted: Deleted) -> bytes:
    """A Delete response: the object as it was (if there was one) and the delete's revision."""
    previous = deleted.previous
    encoded = None if previous is None else object_with_version(previous.value, previous.mod_revision)
    return object_response(encoded, deleted.revision)


def require_revision(value: int, field: str) -> int:
    """A revision or version from a request: 0 (none) or positive; a negative one is INVALID_ARGUMENT."""
    if value < 0:
        raise InvalidArgument([FieldViolation(field, f"{value} is not a revision: it must be 0 or positive")])
    return value


def require_name(name: str) -> str:
    if not name:
        raise InvalidArgument([FieldViolation("name", "name is required")])
    return name


class ResourceServicer(Generic[R, H]):
    def __init__(
        self,
        registry: Registry[R],
        cache: ResourceCache,
        config: ServerConfig,
        hub: H,
        datastore_revision: Callable[[], int],
        page_tokens: PageTokens,
    ) -> None:
        self._registry: Registry[R] = registry
        self._page_tokens = page_tokens
        self._cache = cache
        self._config = config
        self._hub: H = hub
        self._datastore_revision = datastore_revision
        self.authorizer: Authorizer | None = None  # with client certificates: what each identity may do

    async def _wait_for(self, min_resource_version: int) -> None:
        """Hold a read until this server has seen `min_resource_version` (a client's read-your-writes on replicas)."""
        require_revision(min_resource_version, "min_resource_version")
        await self._cache.wait_for_revision(min_resource_version, self._config.min_revision_wait_seconds)

    async def _wait_until_watchable(self, resource_version: int) -> None:
        """A watch from a revision this server has not reached waits for it (SPEC §6.4): UNAVAILABLE
        if the datastore has it and this server is still catching up, RESOURCE_VERSION_TOO_NEW if
        not even the datastore does."""
        try:
            await self._wait_for(resource_version)
        except RevisionNotReached:
            current = self._datastore_revision()
            if resource_version > current:
                raise OutOfRange(
                    f"resource_version {resource_version} is newer than the datastore's revision {current}",
                    reason="RESOURCE_VERSION_TOO_NEW",
                    metadata={"currentResourceVersion": str(current)},
                ) from None
            raise
