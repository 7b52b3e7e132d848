"""The server process: wires store, cache and servicers together, and owns start-up and shutdown.

Start-up order matters: the cache subscribes to the store's change feed before it loads the
snapshot, and ignores any batch the snapshot already covers, so no committed change can fall
between the two. The store's retained history is read after the snapshot (sync/retained.py);
batches that arrive meanwhile are held and applied after it.

Shutdown flips health to NOT_SERVING first (load balancers stop sending), then
lets in-flight calls finish within the grace period, then closes the store (which finishes any
writes still in its commit queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from epsync.server import gcpolicy
from epsync.server.admission import RateLimiter, WatcherBudget
from epsync.server.authorization import Authorizer
from epsync.server.config import ServerConfig
from epsync.server.endpoints import WorkloadEndpointServicer
from epsync.server.histogram import Histogram
from epsync.server.identity import Identities
from epsync.server.metrics import MetricsServer
from epsync.server.paging import PageTokens
from epsync.server.profiles import ProfileServicer
from epsync.server.reflection import add_reflection
from epsync.server.registration import add_service
from epsync.server.registry import endpoint_registry, profile_registry
from epsync.server.status_service import StatusServicer
from epsync.server.tls import ReloadingTls, TlsError, is_loopback
from epsync.server.transport import GrpcServer, TransportOptions, TransportServer
from epsync.server.workers import AddressInUse, WorkerPool, claim_address
from epsync.store.base import Change, Datastore, DatastoreError
from epsync.store.etcd import EtcdDatastore, EtcdTls
from epsync.store.sqlite import SqliteDatastore
from epsync.sync.cache import ResourceCache
from epsync.sync.endpoint_hub import EndpointWatchHub
from epsync.sync.hub import BookmarkPolicy
from epsync.sync.profile_hub import ProfileWatchHub
from epsync.sync.retained import retained_history
from epsync.sync.watcher import WatcherLimits
from epsync.v1 import profile_service_pb2, status_service_pb2, workload_endpoint_service_pb2

log = logging.getLogger(__name__)

ENDPOINT_SERVICE = workload_endpoint_service_pb2.DESCRIPTOR.services_by_name["WorkloadEndpointService"]
PROFILE_SERVICE = profile_service_pb2.DESCRIPTOR.services_by_name["ProfileService"]
STATUS_SERVICE = status_service_pb2.DESCRIPTOR.services_by_name["StatusService"]
SERVICE_NAMES: Sequence[str] = (ENDPOINT_SERVICE.full_name, PROFILE_SERVICE.full_name, STATUS_SERVICE.full_name)


# The share of the grace period over which watch streams are ended on shutdown; the rest is for the last calls.
DRAIN_SHARE = 0.8

# File descriptors a serving process keeps for everything but client connections (its store, logs, pipes).
RESERVED_DESCRIPTORS = 1024


def raise_descriptor_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, where it may; the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_limit(config: ServerConfig) -> int:
    """--max-connections, or what the file-descriptor limit leaves for connections."""
    if config.max_connections is not None:
        return config.max_connections
    return max(64, raise_descriptor_limit() - RESERVED_DESCRIPTORS)


def grpc_options(config: ServerConfig, max_connections: int) -> list[tuple[str, int]]:
    keepalive_ms = int(config.keepalive_seconds * 1000)
    aging = []
    if config.max_connection_age_seconds is not None:
        # gRPC sends GOAWAY at the age (±10% jitter, its own) and lets the connection's calls run the
        # grace period on; a watcher then resumes on a new connection, wherever the balancer sends it.
        aging = [
            ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(config.grace_seconds * 1000)),
        ]
    return [
        *aging,
        # Past the limit new connections are closed at once, so the server never runs out of descriptors.
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_concurrent_streams", config.max_streams_per_connection),
        # A connection that never finishes its handshake (TLS and the HTTP/2 preface) is closed.
        ("grpc.server_handshake_timeout_ms", int(config.handshake_timeout_seconds * 1000)),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        # Several processes share the port only when they are one server's workers (server/workers.py,
        # which first makes sure no other server holds the port); otherwise binding a port in use fails.
        ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
    ]


def transport_options(config: ServerConfig, max_connections: int) -> TransportOptions:
    """The Rust transport held to what `grpc_options` holds grpc.aio to."""
    return TransportOptions(
        max_connections=max_connections,
        max_concurrent_streams=config.max_streams_per_connection,
        keepalive_seconds=config.keepalive_seconds,
        keepalive_timeout_seconds=10.0,
        handshake_timeout_seconds=config.handshake_timeout_seconds,
        max_receive_message=config.max_message_bytes,
        max_send_message=config.max_message_bytes,
        max_connection_age_seconds=config.max_connection_age_seconds,
        max_connection_age_grace_seconds=config.grace_seconds,
        reuse_port=config.workers > 1,
        threads=config.transport_threads,
        # What a stalled watcher holds in the transport stays small beside what its own buffer may hold
        # before it is cut off (--watcher-max-bytes): 64 KiB, or an eighth of that bound if it is smaller.
        response_buffer_bytes=max(1024, min(64 * 1024, config.watcher_max_bytes // 8)),
    )


def open_datastore(config: ServerConfig) -> Datastore:
    """The datastore the config names (not yet opened)."""
    if config.datastore == "etcd":
        tls = None
        if config.etcd_ca_file or config.etcd_cert_file:
            tls = EtcdTls(ca_file=config.etcd_ca_file, cert_file=config.etcd_cert_file, key_file=config.etcd_key_file)
        return EtcdDatastore(
            config.etcd_endpoints, prefix=config.etcd_prefix, tls=tls, expect_existing=config.expect_existing_store
        )
    return SqliteDatastore(
        config.data_dir / "epsync.db",
        history_window=config.history_window,
        expect_existing=config.expect_existing_store,
    )


class EpsyncServer:
    """One epsync server: a datastore, the cache fed by it, and the gRPC services in front."""

    def __init__(self, config: ServerConfig, store: Datastore | None = None) -> None:
        self.config = config
        self.store = store or open_datastore(config)
        self.cache = ResourceCache(config.history_window)
        limits = WatcherLimits(config.watcher_max_events, config.watcher_max_bytes, config.response_bytes)
        bookmarks = BookmarkPolicy(
            interval_seconds=config.bookmark_interval_seconds,
            revision_step=max(1, config.history_window // 4),
            tick_seconds=config.bookmark_tick_seconds,
        )
        self.endpoint_registry = endpoint_registry(self.store, self.cache)
        self.profile_registry = profile_registry(self.store, self.cache)
        self.endpoint_hub = EndpointWatchHub(self.cache, limits, bookmarks)
        self.profile_hub = ProfileWatchHub(self.cache, limits, bookmarks)
        self.health = HealthServicer()
        self.watchers = WatcherBudget(config.max_watchers, config.max_watchers_per_identity)
        self.ready = False  # /readyz: serving, the datastore takes writes, not shutting down
        self.metrics: MetricsServer | None = None
        self.plan_seconds = Histogram((0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
        self.rate = RateLimiter(config.rate_limit, config.rate_burst) if config.rate_limit > 0 else None
        self._server: GrpcServer | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.port = 0
        self.tls: ReloadingTls | None = None
        self._held: list[Sequence[Change]] | None = None  # batches held back while the cache loads

    async def start(self) -> int:
        """Open the store, fill the cache, and listen; returns the bound port (useful with port 0)."""
        await self.store.open()
        # Batches committed while the history is read wait until the cache has it (they follow it).
        self._held = []
        self.store.add_listener(self._apply)
        snapshot = await self.store.snapshot()
        since, history = await retained_history(self.store, snapshot.revision, self.config.history_window)
        self.cache.load(snapshot, history, since)
        held, self._held = self._held, None
        for batch in held:
            self._apply(batch)
        log.info(
            "watches can resume from revision %d on (history of %d revisions retained)",
            self.cache.oldest_replayable,
            snapshot.revision - self.cache.oldest_replayable,
        )

        max_connections = connection_limit(self.config)  # raises the descriptor limit, once
        server: GrpcServer
        if self.config.transport == "rust":
            server = TransportServer(transport_options(self.config, max_connections))
        else:
            server = grpc.aio.server(options=grpc_options(self.config, max_connections))
        page_tokens = PageTokens(self.store.identity.secret)  # the same on every server of this store
        self.endpoint_hub.store_id = self.profile_hub.store_id = self.store.identity.store_id
        endpoints = WorkloadEndpointServicer(
            self.endpoint_registry,
            self.cache,
            self.config,
            self.endpoint_hub,
            lambda: self.store.current_revision,
            page_tokens,
        )
        profiles = ProfileServicer(
            self.profile_registry,
            self.cache,
            self.config,
            self.profile_hub,
            lambda: self.store.current_revision,
            page_tokens,
        )
        authorizer = None
        mutual_tls = self.config.client_ca_file is not None  # identities from client certificates (SPEC §8)
        if mutual_tls or self.config.mode == "kubernetes":
            identities = Identities(required=mutual_tls, trust_domain=self.config.trust_domain)
            authorizer = Authorizer(identities, kubernetes=self.config.mode == "kubernetes")
        endpoints.authorizer = profiles.authorizer = authorizer
        writes = {"Create", "Update", "Delete"}
        endpoint_bytes = {"WatchWorkloadEndpoints", "ListWorkloadEndpoints", "WriteWorkloadEndpoints"}
        add_service(
            server,
            ENDPOINT_SERVICE,
            endpoints,
            pre_encoded=endpoint_bytes | {f"{w}WorkloadEndpoint" for w in writes},
            authorizer=authorizer,
            watchers=self.watchers,
            rate=self.rate,
        )
        add_service(
            server,
            PROFILE_SERVICE,
            profiles,
            pre_encoded={"WatchProfiles"} | {f"{w}Profile" for w in writes},
            authorizer=authorizer,
            watchers=self.watchers,
            rate=self.rate,
        )
        status = StatusServicer(self, max_connections)
        add_service(server, STATUS_SERVICE, status, authorizer=authorizer)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        add_reflection(server, (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name))
        try:
            self.port = self._listen(server)
        except RuntimeError:  # grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise StartupError(
                f"cannot listen on {self.config.listen}: the address is in use or not this machine's; "
                "choose another with --listen"
            )
        await server.start()
        self._server = server
        self.endpoint_hub.start_ticker()
        self.profile_hub.start_ticker()
        await self._report_health(self.store.healthy)
        self.store.add_health_listener(self._on_datastore_health)
        if self.config.metrics_listen is not None:
            self.metrics = MetricsServer(self.config.metrics_listen, self)
            self.metrics.start()
            log.info(
                "epsync metrics on http://%s:%d/metrics (and /livez, /readyz)", self.metrics.host, self.metrics.port
            )
        log.info(
            "epsync serving on %s (revision %d, %d endpoints)",
            self.address,
            self.cache.revision,
            self.cache.endpoint_count(),
        )
        return self.port

    def _listen(self, server: GrpcServer) -> int:
        """Bind the listen address: TLS when configured, else plaintext (beyond loopback only with --insecure)."""
        files = self.config.tls
        if files is not None:
            try:
                self.tls = ReloadingTls(files)
                if isinstance(server, TransportServer):
                    return server.add_secure_port(self.config.listen, self.tls)
                return server.add_secure_port(self.config.listen, self.tls.credentials())
            except TlsError as error:
                raise StartupError(f"cannot serve TLS: {error}") from None
        if not is_loopback(self.config.listen):
            log.warning(
                "serving plaintext on %s, beyond this machine (--insecure): anyone who reaches it is admin",
                self.config.listen,
            )
        return server.add_insecure_port(self.config.listen)

    @property
    def calls_in_progress(self) -> int | None:
        """Calls whose handlers are running now (None when grpc.aio serves, which does not say)."""
        return self._server.calls_in_progress if isinstance(self._server, TransportServer) else None

    @property
    def address(self) -> str:
        """host:port the server listens on, with the port it bound (the configured one may be 0)."""
        host = self.config.listen.rpartition(":")[0]
        return f"{host}:{self.port}"

    async def _report_health(self, datastore_healthy: bool) -> None:
        # Reads and watches go on from the cache while the datastore is down, but writes fail: a load
        # balancer should prefer a replica whose datastore answers.
        self.ready = datastore_healthy and not self.endpoint_hub.draining
        status = (
            health_pb2.HealthCheckResponse.SERVING if datastore_healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    def _on_datastore_health(self, healthy: bool) -> None:
        log.warning("datastore is %s", "available again" if healthy else "unavailable: writes fail until it is back")
        task = asyncio.get_running_loop().create_task(self._report_health(healthy))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _apply(self, changes: Sequence[Change]) -> None:
        """The change feed: advance the cache, then tell the watchers (before the writers hear back)."""
        if self._held is not None:
            self._held.append(changes)
            return
        started = time.perf_counter()
        applied = self.cache.apply(changes)
        if applied is not None:
            self.endpoint_hub.publish(applied)
            self.profile_hub.publish(applied)
        self.plan_seconds.observe(time.perf_counter() - started)

    async def stop(self, grace: float | None = None) -> None:
        """Drain, then stop: health NOT_SERVING first (load balancers stop sending), no new writes (each
        answered UNAVAILABLE SHUTTING_DOWN; those queued still commit), watch streams ended with
        SHUTTING_DOWN spread over most of the grace period (their clients resume elsewhere a few at a
        time, not in one stampede), then in-flight calls get what is left of it."""
        grace = self.config.grace_seconds if grace is None else grace
        started = time.monotonic()
        self.ready = False
        await self.health.enter_graceful_shutdown()
        self.endpoint_registry.drain()
        self.profile_registry.drain()
        spread = grace * DRAIN_SHARE
        await asyncio.gather(self.endpoint_hub.shutdown(spread), self.profile_hub.shutdown(spread))
        if self._server is not None:
            await self._server.stop(max(0.0, grace - (time.monotonic() - started)))
            self._server = None
        await self.endpoint_registry.close()
        await self.profile_registry.close()
        await self.store.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
            self.metrics = None

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


class StartupError(Exception):
    """The server cannot start; the message says why and what to do, in one line."""


async def serve(config: ServerConfig, log_level: str = "INFO") -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. Raises StartupError if it cannot start.

    With `config.workers` > 1 this process is the owner of N - 1 workers on the same address
    (server/workers.py); they are stopped first on shutdown, while the owner's store still takes
    the writes they finish.
    """
    gcpolicy.apply()
    if config.workers > 1:
        try:
            config = config.model_copy(update={"listen": claim_address(config.listen)})
        except AddressInUse as error:
            raise StartupError(str(error)) from None
    server = EpsyncServer(config)
    try:
        await server.start()
    except (StartupError, DatastoreError) as error:
        await server.stop(grace=0)  # whatever did open (the datastore, its lock) is released
        raise StartupError(str(error)) from None
    gcpolicy.freeze_startup()
    pool: WorkerPool | None = None
    if config.workers > 1:
        pool = WorkerPool(config, server.store, log_level)
        await pool.start()
        log.info(
            "serving with %d processes on %s: this owner and %d workers",
            config.workers,
            server.address,
            config.workers - 1,
        )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down (grace %.1fs)", config.grace_seconds)
    if pool is not None:
        await pool.stop(config.grace_seconds)
    await server.stop()
    log.info("stopped")
