"""What the operator's views read of a running server (app.EpsyncServer has it): the metrics
(server/metrics.py) and GetStatus (server/status_service.py) read the same objects, named once here."""

from __future__ import annotations

from typing import Any, Protocol

from epsync.server.config import ServerConfig
from epsync.server.histogram import Histogram
from epsync.server.registry import Registry
from epsync.store.base import Datastore
from epsync.sync.cache import ResourceCache
from epsync.sync.hub import WatchHub


class ServerState(Protocol):
    @property
    def config(self) -> ServerConfig: ...
    @property
    def store(self) -> Datastore: ...
    @property
    def cache(self) -> ResourceCache: ...
    @property
    def endpoint_hub(self) -> WatchHub[Any, Any]: ...
    @property
    def profile_hub(self) -> WatchHub[Any, Any]: ...
    @property
    def endpoint_registry(self) -> Registry[Any]: ...
    @property
    def profile_registry(self) -> Registry[Any]: ...
    @property
    def ready(self) -> bool: ...  # /readyz: serving, the datastore takes writes, not shutting down
    @property
    def plan_seconds(self) -> Histogram: ...  # per committed batch applied to the cache and planned
    @property
    def port(self) -> int: ...


def hubs(server: ServerState) -> dict[str, WatchHub[Any, Any]]:
    """The server's watch hubs by kind, as the metrics and the status name them."""
    return {"endpoints": server.endpoint_hub, "profiles": server.profile_hub}


def registries(server: ServerState) -> dict[str, Registry[Any]]:
    """The server's write registries by kind."""
    return {"endpoints": server.endpoint_registry, "profiles": server.profile_registry}


def cached(server: ServerState) -> dict[str, int]:
    """Objects in the cache by kind."""
    return {"endpoints": server.cache.endpoint_count(), "profiles": len(server.cache.profiles())}
