"""The operator's view over HTTP (`--metrics-listen`): Prometheus metrics at /metrics, and /livez and
/readyz, as Typha offers them.

Every figure is read from the state the server keeps anyway (the hubs, the cache, the store) when
Prometheus scrapes, so serving metrics costs nothing on the data path; the few things counted as they
happen (responses and bytes sent, refusals by reason, cut-offs) are plain integers on the event loop.
The HTTP server runs on its own thread: a scrape never waits for the event loop, and reads the
integers as they are at that moment.

With `--workers N` the owner serves the metrics of its own process (every change passes through it;
the workers' watchers are theirs and not counted here).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from epsync.server.histogram import Histogram
from epsync.server.state import ServerState, cached, hubs, registries
from epsync.server.status import REFUSED  # refusals by (code, reason), counted where every refusal leaves
from epsync.sync.watcher import CUT_OFFS  # watch streams cut off, by reason


class _Collector(Collector):
    def __init__(self, server: ServerState) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        server = self.server
        by_kind = hubs(server)
        watchers = GaugeMetricFamily(
            "epsync_watchers",
            "Watch streams open now, by kind and what their filter narrows by.",
            labels=["kind", "filter"],
        )
        for kind, by_type in ((kind, hub.watchers_by_filter_type()) for kind, hub in by_kind.items()):
            for filter_type in ("node", "selector", "namespace", "all"):
                watchers.add_metric([kind, filter_type], by_type.get(filter_type, 0))
        yield watchers
        plan = HistogramMetricFamily(
            "epsync_plan_seconds", "Seconds to apply one committed batch to the cache and plan its fan-out."
        )
        plan.add_metric([], _buckets(server.plan_seconds), server.plan_seconds.total)
        yield plan
        connections = open_connections(server.port)
        if connections is not None:
            yield GaugeMetricFamily("epsync_connections", "Client connections open to this process.", value=connections)
        events = CounterMetricFamily(
            "epsync_events_published", "Watch events encoded for watchers (once per event, shared).", labels=["kind"]
        )
        for kind, hub in by_kind.items():
            events.add_metric([kind], hub.subjects_encoded)
        yield events
        responses = CounterMetricFamily("epsync_watch_responses", "Watch responses sent.", labels=["kind"])
        sent = CounterMetricFamily("epsync_watch_bytes", "Watch response bytes sent.", labels=["kind"])
        for kind, hub in by_kind.items():
            responses.add_metric([kind], hub.responses_sent)
            sent.add_metric([kind], hub.bytes_sent)
        yield responses
        yield sent
        refused = CounterMetricFamily(
            "epsync_rejected_requests",
            "Requests answered with an error, by code and reason.",
            labels=["code", "reason"],
        )
        for (code, reason), count in sorted(REFUSED.items()):
            refused.add_metric([code, reason], count)
        yield refused
        cut = CounterMetricFamily("epsync_watcher_cutoffs", "Watch streams cut off, by reason.", labels=["reason"])
        for reason, count in sorted(CUT_OFFS.items()):
            cut.add_metric([reason], count)
        yield cut
        yield GaugeMetricFamily(
            "epsync_revision", "The store's revision this server has applied.", value=server.cache.revision
        )
        yield GaugeMetricFamily(
            "epsync_oldest_replayable_revision",
            "The oldest revision a watch may resume after from history.",
            value=server.cache.oldest_replayable,
        )
        objects = GaugeMetricFamily("epsync_cached_objects", "Objects in the cache.", labels=["kind"])
        for kind, count in cached(server).items():
            objects.add_metric([kind], count)
        yield objects
        yield GaugeMetricFamily(
            "epsync_undecodable_values_skipped",
            "Stored values skipped because they do not decode (named in the log).",
            value=len(server.cache.undecodable),
        )
        yield GaugeMetricFamily(
            "epsync_datastore_up", "1 while the datastore takes writes, else 0.", value=int(server.store.healthy)
        )
        yield GaugeMetricFamily(
            "epsync_ready", "1 while the server is ready to serve (readyz).", value=int(server.ready)
        )
        groups = HistogramMetricFamily(
            "epsync_commit_group_size", "Writes one datastore commit carried.", labels=["kind"]
        )
        latency = HistogramMetricFamily(
            "epsync_write_seconds", "Seconds from a write's arrival to its answer.", labels=["kind"]
        )
        for kind, registry in registries(server).items():
            groups.add_metric([kind], _buckets(registry.commit_groups), registry.commit_groups.total)
            latency.add_metric([kind], _buckets(registry.write_seconds), registry.write_seconds.total)
        yield groups
        yield latency


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    """Prometheus's cumulative buckets of `histogram`, ending with +Inf."""
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        seen += count
        out.append(("+Inf" if bound == float("inf") else f"{bound:g}", seen))
    return out


def open_connections(port: int) -> int | None:
    """Established TCP connections on `port` held by this process, from Linux's /proc (None elsewhere)."""
    try:
        mine = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith("socket:["):
                    mine.add(target[8:-1])
        count = 0
        for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in mine:
                        count += 1
        return count
    except OSError:
        return None


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
        pass


class _ThreadingServer(WSGIServer):
    daemon_threads = True


class MetricsServer:
    """/metrics, /livez and /readyz on `address` (host:port; port 0 picks one), on a thread of its own."""

    def __init__(self, address: str, server: ServerState) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(server))
        self.server = server
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self._http = make_server(self.host, int(port), self._app, _ThreadingServer, _QuietHandler)
        self.port = self._http.server_port
        self._thread = threading.Thread(target=self._http.serve_forever, name="epsync-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _app(self, environ: dict[str, Any], respond: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            respond("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(self.registry)]
        if path == "/livez":
            respond("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            if self.server.ready:
                respond("200 OK", [("Content-Type", "text/plain")])
                return [b"ready\n"]
            respond("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"not ready: the datastore cannot take writes, or the server is shutting down\n"]
        respond("404 Not Found", [("Content-Type", "text/plain")])
        return [b"/metrics, /livez or /readyz\n"]
