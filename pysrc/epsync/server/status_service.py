"""`StatusService.GetStatus`: one server process's state for an operator (`epsync status`), read from what
the process holds at the moment it answers."""

from __future__ import annotations

from epsync.server.config import ServerConfig
from epsync.server.resource_servicer import Context
from epsync.server.state import ServerState, cached, hubs, registries
from epsync.server.status import unary_errors
from epsync.sync.watcher import CUT_OFFS
from epsync.v1 import status_service_pb2 as pb

DEFAULT_TOP_GROUPS = 10
MAX_LISTED_UNDECODABLE = 100


def limits_in_force(config: ServerConfig, max_connections: int) -> dict[str, str]:
    """The limits a client can meet, by flag name without its dashes."""
    rate = f"{config.rate_limit:g}/s, bursts of {config.rate_burst:g}" if config.rate_limit > 0 else "none"
    return {
        "max-watchers": str(config.max_watchers),
        "max-watchers-per-identity": str(config.max_watchers_per_identity),
        "rate-limit": rate,
        "max-connections": str(max_connections),
        "max-streams-per-connection": str(config.max_streams_per_connection),
        "handshake-timeout": f"{config.handshake_timeout_seconds:g}s",
        "watcher-max-events": str(config.watcher_max_events),
        "watcher-max-bytes": str(config.watcher_max_bytes),
        "history-window": str(config.history_window),
        "mode": config.mode,
    }


class StatusServicer:
    def __init__(self, server: ServerState, max_connections: int) -> None:
        self._server = server
        self._limits = limits_in_force(server.config, max_connections)

    @unary_errors
    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.GetStatusResponse:
        server = self._server
        by_kind, counts = hubs(server), cached(server)
        groups = [
            pb.WatcherGroup(kind=kind, filter=description, watchers=size)
            for kind, hub in by_kind.items()
            for description, size in hub.group_sizes()
        ]
        groups.sort(key=lambda g: (-g.watchers, g.kind, g.filter))
        top = request.top_groups if request.top_groups > 0 else DEFAULT_TOP_GROUPS
        undecodable = dict(sorted(server.cache.undecodable.items())[:MAX_LISTED_UNDECODABLE])
        return pb.GetStatusResponse(
            datastore_healthy=server.store.healthy,
            shutting_down=server.endpoint_hub.draining,
            store_id=server.store.identity.store_id,
            revision=server.cache.revision,
            oldest_replayable_revision=server.cache.oldest_replayable,
            endpoints=counts["endpoints"],
            profiles=counts["profiles"],
            watchers=sum(hub.watcher_count for hub in by_kind.values()),
            top_groups=groups[:top],
            cutoffs=dict(CUT_OFFS),
            limits=self._limits,
            mean_commit_group_size={kind: registry.commit_groups.mean for kind, registry in registries(server).items()},
            undecodable={
                key: f"does not decode (stored at revision {revision})" for key, revision in undecodable.items()
            },
        )
