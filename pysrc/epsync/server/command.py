"""`epsync serve`: the server's flags, turned into one validated `ServerConfig`, then the server run.

Building the flags imports nothing but argparse: every `epsync` command builds them (for `--help` and
completion), and only `serve` needs the server, pydantic and gRPC, imported in `run_serve`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from epsync.server.cores import default_workers


def add_serve_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--listen", default="127.0.0.1:50051", help="host:port to listen on (default %(default)s)")
    serve.add_argument("--data-dir", type=Path, default=Path("./data"), help="embedded store directory")
    serve.add_argument("--datastore", choices=["sqlite", "etcd"], default="sqlite", help="where the data lives")
    serve.add_argument("--etcd-endpoints", default="", help="etcd endpoints, comma-separated (host:port or URLs)")
    serve.add_argument("--etcd-prefix", default="/epsync/v1/", help="key prefix of epsync's data in etcd")
    serve.add_argument("--etcd-ca-file", type=Path, help="CA bundle for etcd's TLS certificate")
    serve.add_argument("--etcd-cert-file", type=Path, help="client certificate for etcd (mutual TLS)")
    serve.add_argument("--etcd-key-file", type=Path, help="client key for etcd (mutual TLS)")
    serve.add_argument(
        "--expect-existing-store",
        action="store_true",
        help="refuse to start on an empty data directory or etcd prefix (a wipe), rather than make a new store",
    )
    serve.add_argument("--history-window", type=int, default=100_000, help="revisions of history kept for resume")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds shutdown waits for in-flight calls")
    serve.add_argument("--watcher-max-events", type=int, default=10_000, help="events a watcher may fall behind")
    serve.add_argument("--watcher-max-bytes", type=int, default=64 << 20, help="bytes a watcher may fall behind")
    serve.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds before an idle watch is bookmarked"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes serving the listen address, fed from one store "
        f"(default: one per two cores: {default_workers()})",
    )
    serve.add_argument(
        "--transport",
        choices=("rust", "grpcio"),
        default=None,
        help="what serves gRPC: the Rust transport on threads of its own, or grpc.aio (default: $EPSYNC_TRANSPORT, "
        "else rust)",
    )
    serve.add_argument("--transport-threads", type=int, default=2, help="threads of the Rust transport (%(default)s)")
    serve.add_argument("--tls-cert-file", type=Path, help="serve TLS with this certificate (PEM, with its chain)")
    serve.add_argument("--tls-key-file", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument(
        "--client-ca-file", type=Path, help="mutual TLS: require client certificates signed by this CA bundle"
    )
    serve.add_argument("--max-watchers", type=int, default=50_000, help="watch streams a serving process holds")
    serve.add_argument(
        "--max-watchers-per-identity", type=int, default=1_000, help="watch streams one client identity holds (mTLS)"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="connections a serving process accepts (default: its descriptor limit less 1,024)",
    )
    serve.add_argument(
        "--rate-limit", type=float, default=1_000.0, help="calls a second per client identity (mTLS); 0: no limit"
    )
    serve.add_argument("--rate-burst", type=float, default=2_000.0, help="calls one client identity may make at once")
    serve.add_argument(
        "--max-streams-per-connection", type=int, default=1_000, help="concurrent streams on a connection"
    )
    serve.add_argument(
        "--max-connection-age",
        type=float,
        help="seconds after which a connection is closed (with jitter) so clients rebalance (default: never)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds a new connection may take to finish its handshake",
    )
    serve.add_argument(
        "--metrics-listen", help="host:port for Prometheus /metrics, /livez and /readyz over HTTP (default: none)"
    )
    serve.add_argument(
        "--mode",
        choices=["etcdv3", "kubernetes"],
        default="etcdv3",
        help="the seed's supported-operations table: kubernetes allows endpoint create/delete to the orchestrator only "
        "and no profile writes (default %(default)s)",
    )
    serve.add_argument(
        "--trust-domain", default="epsync", help="trust domain of client identities (spiffe://<domain>/node/<name>)"
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext beyond loopback (without TLS the server listens only on loopback addresses)",
    )
    serve.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log lines as text, or one JSON object each"
    )
    serve.add_argument("--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(run="epsync.server.command:run_serve")


# ServerConfig fields whose flag is not simply the field's name.
_FLAG_OF_FIELD = {
    "grace_seconds": "--grace",
    "bookmark_interval_seconds": "--bookmark-interval",
    "handshake_timeout_seconds": "--handshake-timeout",
    "max_connection_age_seconds": "--max-connection-age",
}


def run_serve(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the client commands share this parser and need none of the server.
    import asyncio

    from pydantic import ValidationError

    from epsync.errors import UsageError
    from epsync.server.app import StartupError, serve
    from epsync.server.config import ServerConfig
    from epsync.server.logs import configure as configure_logs

    configure_logs(args.log_level, args.log_format)
    try:
        config = ServerConfig(
            listen=args.listen,
            data_dir=args.data_dir,
            datastore=args.datastore,
            etcd_endpoints=tuple(e.strip() for e in args.etcd_endpoints.split(",") if e.strip()),
            etcd_prefix=args.etcd_prefix,
            etcd_ca_file=args.etcd_ca_file,
            etcd_cert_file=args.etcd_cert_file,
            etcd_key_file=args.etcd_key_file,
            history_window=args.history_window,
            grace_seconds=args.grace,
            watcher_max_events=args.watcher_max_events,
            watcher_max_bytes=args.watcher_max_bytes,
            bookmark_interval_seconds=args.bookmark_interval,
            workers=default_workers() if args.workers is None else args.workers,
            expect_existing_store=args.expect_existing_store,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            client_ca_file=args.client_ca_file,
            insecure=args.insecure,
            trust_domain=args.trust_domain,
            mode=args.mode,
            metrics_listen=args.metrics_listen,
            log_format=args.log_format,
            max_watchers=args.max_watchers,
            max_watchers_per_identity=args.max_watchers_per_identity,
            max_connections=args.max_connections,
            max_streams_per_connection=args.max_streams_per_connection,
            rate_limit=args.rate_limit,
            rate_burst=args.rate_burst,
            handshake_timeout_seconds=args.handshake_timeout,
            max_connection_age_seconds=args.max_connection_age,
            transport_threads=args.transport_threads,
            **({} if args.transport is None else {"transport": args.transport}),
        )
    except ValidationError as error:
        first = error.errors()[0]
        if not first["loc"]:  # a rule about several settings together
            raise UsageError(str(first["msg"]).removeprefix("Value error, ")) from None
        field = str(first["loc"][0])
        flag = _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))
        raise UsageError(f"{flag}: {first['msg']}") from None
    try:
        asyncio.run(serve(config, args.log_level))
    except StartupError as error:
        raise UsageError(str(error)) from None
    return 0
