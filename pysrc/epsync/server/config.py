"""Server configuration: one validated model, filled from the `epsync serve` flags (server/command.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from epsync.server.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from epsync.server.tls import TlsFiles, is_loopback

MiB = 1024 * 1024
# Under the 4 MiB gRPC clients receive by default, with room for a response's own fields.
DEFAULT_RESPONSE_BYTES = 4 * MiB - 64 * 1024


class ServerConfig(BaseModel):
    """Everything `epsync serve` can be told; defaults are the spec's (SPEC §6, Defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = Field("127.0.0.1:50051", description="host:port to listen on")
    data_dir: Path = Field(Path("./data"), description="directory of the embedded SQLite store")
    datastore: Literal["sqlite", "etcd"] = Field("sqlite", description="the embedded store, or etcd v3")
    etcd_endpoints: tuple[str, ...] = Field((), description="etcd client URLs or host:port (etcd datastore)")
    etcd_prefix: str = Field("/epsync/v1/", description="key prefix of epsync's data in etcd")
    etcd_ca_file: Path | None = Field(None, description="CA bundle that signs etcd's certificate")
    etcd_cert_file: Path | None = Field(None, description="client certificate for etcd (mutual TLS)")
    etcd_key_file: Path | None = Field(None, description="client key for etcd (mutual TLS)")
    history_window: int = Field(100_000, ge=1, description="revisions of history kept for watch resume")
    default_page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    max_page_size: int = Field(MAX_PAGE_SIZE, ge=1)
    max_message_bytes: int = Field(16 * MiB, ge=64 * 1024, description="largest gRPC message sent or received")
    # gRPC clients receive at most 4 MiB a message unless told otherwise (grpcio, grpc-go, grpcurl): a List
    # page or watch response the server builds stays under that, whatever the page size asked for.
    # None: that, or max_message_bytes if it is smaller (see `response_bytes`).
    max_response_bytes: int | None = Field(
        None, ge=64 * 1024, description="largest List page or watch response the server builds"
    )
    keepalive_seconds: float = Field(30.0, gt=0, description="ping idle connections this often")
    grace_seconds: float = Field(10.0, ge=0, description="how long shutdown waits for in-flight calls")
    min_revision_wait_seconds: float = Field(3.0, ge=0, description="how long a read waits for min_resource_version")
    watcher_max_events: int = Field(10_000, ge=1, description="events a watcher may have queued before it is cut off")
    watcher_max_bytes: int = Field(64 * MiB, ge=1, description="bytes a watcher may have queued before it is cut off")
    bookmark_interval_seconds: float = Field(60.0, gt=0, description="bookmark a watcher idle this long")
    bookmark_tick_seconds: float = Field(1.0, gt=0, description="how often bookmarks are considered")
    expect_existing_store: bool = Field(
        False, description="refuse to start unless the datastore already holds a store (not a new, empty one)"
    )
    workers: int = Field(1, ge=1, le=64, description="serving processes on the listen address (--workers)")
    tls_cert_file: Path | None = Field(None, description="the server's certificate (PEM, with its chain): serve TLS")
    tls_key_file: Path | None = Field(None, description="the certificate's private key (PEM)")
    client_ca_file: Path | None = Field(
        None, description="CA bundle client certificates must chain to: mutual TLS, a client certificate required"
    )
    insecure: bool = Field(False, description="serve plaintext on an address beyond this machine")
    max_watchers: int = Field(50_000, ge=1, description="watch streams one serving process holds, in all")
    max_watchers_per_identity: int = Field(
        1_000, ge=1, description="watch streams one client identity holds on a serving process (mutual TLS)"
    )
    max_connections: int | None = Field(
        None, ge=1, description="connections one serving process accepts (None: its file-descriptor limit less 1,024)"
    )
    # A stream past the limit is refused (REFUSED_STREAM), and before a client has the server's SETTINGS it
    # cannot know the limit: a client starting many calls at once on a new connection would see UNAVAILABLE.
    # So the default leaves any one client its usual concurrency and bounds only the abusive.
    max_streams_per_connection: int = Field(
        1_000, ge=1, description="concurrent streams on one connection (HTTP/2 MAX_CONCURRENT_STREAMS)"
    )
    max_connection_age_seconds: float | None = Field(
        None, gt=0, description="close connections this old (gRPC adds ±10% jitter), so clients rebalance over replicas"
    )
    handshake_timeout_seconds: float = Field(
        10.0, gt=0, description="how long a new connection may take to finish its TLS and HTTP/2 handshake"
    )
    rate_limit: float = Field(
        1_000.0, ge=0, description="calls a second one client identity may make (mutual TLS); 0: no limit"
    )
    rate_burst: float = Field(2_000.0, ge=1, description="calls one client identity may make at once")
    transport: Literal["rust", "grpcio"] = Field(
        default_factory=lambda: os.environ.get("EPSYNC_TRANSPORT", "rust"),  # type: ignore[arg-type]
        description="what serves gRPC: the Rust transport on threads of its own, or grpc.aio on the event loop",
    )
    transport_threads: int = Field(2, ge=1, le=64, description="threads of the Rust transport (--transport rust)")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text, or one JSON object each")
    metrics_listen: str | None = Field(
        None, description="host:port of the HTTP server for /metrics, /livez and /readyz (None: no metrics)"
    )
    mode: Literal["etcdv3", "kubernetes"] = Field(
        "etcdv3", description="the seed's supported-operations table to apply (kubernetes: endpoints tied to pods)"
    )
    trust_domain: str = Field(
        "epsync", min_length=1, description="the trust domain of identities' SPIFFE IDs (spiffe://<domain>/node/<name>)"
    )

    @model_validator(mode="after")
    def _datastore_settings_fit(self) -> ServerConfig:
        if self.max_response_bytes is not None and self.max_response_bytes > self.max_message_bytes:
            raise ValueError("max_response_bytes cannot exceed max_message_bytes")
        if self.datastore == "etcd" and not self.etcd_endpoints:
            raise ValueError("the etcd datastore needs etcd endpoints (--etcd-endpoints)")
        if (self.etcd_cert_file is None) != (self.etcd_key_file is None):
            raise ValueError("an etcd client certificate and its key go together (--etcd-cert-file, --etcd-key-file)")
        if not self.etcd_prefix.startswith("/") or not self.etcd_prefix.endswith("/"):
            raise ValueError("the etcd prefix (--etcd-prefix) must start and end with '/'")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("a TLS certificate and its key go together (--tls-cert-file, --tls-key-file)")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("mutual TLS (--client-ca-file) needs the server's own certificate (--tls-cert-file)")
        if self.tls_cert_file is None and not self.insecure and not is_loopback(self.listen):
            raise ValueError(
                f"refusing to serve plaintext on {self.listen}, beyond this machine: give --tls-cert-file and "
                "--tls-key-file, or --insecure"
            )
        return self

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files, when the server serves TLS."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.client_ca_file)

    @property
    def response_bytes(self) -> int:
        """The largest List page or watch response the server builds."""
        if self.max_response_bytes is not None:
            return self.max_response_bytes
        return min(DEFAULT_RESPONSE_BYTES, self.max_message_bytes)
