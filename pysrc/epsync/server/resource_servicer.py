"""What every resource servicer shares: its registry, the cache, the config and request helpers."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import grpc

from epsync.cache import ResourceCache
from epsync.config import ServerConfig
from epsync.errors import FieldViolation, InvalidArgument
from epsync.registry import Registry
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", WorkloadEndpoint, Profile)


def require_name(name: str) -> str:
    if not name:
        raise InvalidArgument([FieldViolation("name", "name is required")])
    return name


class ResourceServicer(Generic[R]):
    def __init__(self, registry: Registry[R], cache: ResourceCache, config: ServerConfig) -> None:
        self._registry: Registry[R] = registry
        self._cache = cache
        self._config = config

    async def _wait_for(self, min_resource_version: int) -> None:
        """Hold a read until this server has seen `min_resource_version` (a client's read-your-writes on replicas)."""
        await self._cache.wait_for_revision(min_resource_version, self._config.min_revision_wait_seconds)
