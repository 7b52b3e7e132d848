"""A load-generator process holding a share of the watchers: node agents and selector watchers.

    python -m bench.loadtest.agents --mode epsync --target 127.0.0.1:50051

Every watcher has its own gRPC channel (its own TCP connection: a local subchannel pool, so gRPC
does not share one connection between channels to the same target) and keeps its own view, key ->
resource_version, as a node agent would. The orchestrator drives the process over stdin/stdout
(`bench.loadtest.control`); once a second the process reports what it received: events, response
bytes, latency histograms per watcher class, reconnects and cut-offs, and its own CPU time, so it is
visible when the load generators rather than the server are the limit.

Modes:
- `epsync` (also the raw gRPC server, which speaks the same method): WatchWorkloadEndpoints with
  send_initial_events, resumed as `epsync.client.view.MaterializedView` resumes (from the last complete
  revision, with the versions of everything held). Responses are parsed by the upb-backed protobuf
  runtime, reading only the fields the view and the latency need.
- `etcd`: each node agent watches its own key prefix the way a node agent without a fan-out layer
  would: Range the prefix, then Watch from the next revision; after any reconnect it re-lists,
  because etcd has no known-versions resume.

Latency is receive time minus the send time the writer stamped into `spec.containerID`
(`population.sent_ns_of`), counted for live events only: not for the catch-up events of a
(re)connect, which carry old stamps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import grpc

from bench.loadtest import procstat
from bench.loadtest.control import ChildChannel, Message, child_channel
from bench.loadtest.histogram import Histogram
from bench.population import ETCD_PREFIX, etcd_node_prefix, sent_ns_of
from epsync.errors import rpc_error
from epsync.etcd.v3 import rpc_pb2
from epsync.server import gcpolicy
from epsync.v1.watch_pb2 import BOOKMARK, DELETED
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest, WatchWorkloadEndpointsResponse

WATCH_METHOD = "/epsync.v1.WorkloadEndpointService/WatchWorkloadEndpoints"
MAX_MESSAGE = 64 * 1024 * 1024


def channel_options(*, small_window: int = 0) -> list[tuple[str, int]]:
    options = [
        ("grpc.use_local_subchannel_pool", 1),  # one connection per watcher, as separate node agents have
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    if small_window:
        # A stalled watcher with gRPC's usual windows (and BDP probing) absorbs hundreds of KiB before
        # the server's buffer grows at all; a small window makes the stall reach the server in seconds.
        options += [("grpc.http2.lookahead_bytes", small_window), ("grpc.http2.bdp_probe", 0)]
    return options


class Stats:
    """What the process received since the last report."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.live_events = 0
        self.bytes = 0
        self.responses = 0
        self.latency: dict[str, Histogram] = {}
        self.events_by_class: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def histogram(self, cls: str) -> Histogram:
        found = self.latency.get(cls)
        if found is None:
            found = self.latency[cls] = Histogram()
        return found

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def report(self) -> Message:
        return {
            "events": self.events,
            "live_events": self.live_events,
            "bytes": self.bytes,
            "responses": self.responses,
            "events_by_class": self.events_by_class,
            "latency": {cls: h.to_json() for cls, h in self.latency.items()},
            "errors": self.errors,
        }


class Watcher:
    """One node agent or selector watcher: its connection, its view, and how it (re)syncs."""

    def __init__(self, spec: Message, target: str, stats: Stats, small_window: int) -> None:
        self.id: int = spec["id"]
        self.cls: str = spec["cls"]
        self.node: str = spec.get("node", "")
        self.selector: str = spec.get("selector", "")
        self.target = target
        self.stats = stats
        self.small_window = small_window
        self.view: dict[str, int] = {}
        self.revision = 0
        self.stream_synced = False
        self.synced = asyncio.Event()
        self.reading = asyncio.Event()
        self.reading.set()
        self.fresh = False  # the next stream starts from nothing (scenario 2c)
        self.sync_started = time.monotonic()
        self.sync_seconds: float | None = None
        self.sync_bytes = 0  # response bytes from the start of a (re)connect until in sync
        self.cutoffs = 0
        self.reconnects = 0
        self.channel: grpc.aio.Channel | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self, *, fresh: bool = False) -> None:
        if fresh:
            self.view.clear()
            self.revision = 0
        self.synced.clear()
        self.sync_seconds = None
        self.sync_bytes = 0
        self.sync_started = time.monotonic()
        self.channel = grpc.aio.insecure_channel(self.target, options=channel_options(small_window=self.small_window))
        self.task = asyncio.create_task(self._run(self.channel), name=f"watcher {self.id}")

    async def drop(self) -> None:
        """Cut the connection now, keeping the view (as a server restart would cut it)."""
        task, channel, self.task, self.channel = self.task, self.channel, None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if channel is not None:
            await channel.close(grace=None)

    def _mark_synced(self) -> None:
        self.stream_synced = True
        if not self.synced.is_set():
            self.sync_seconds = time.monotonic() - self.sync_started
            self.synced.set()

    async def _run(self, channel: grpc.aio.Channel) -> None:
        delay = 0.05
        while True:
            self.stream_synced = False
            try:
                await self._stream(channel)
                self.stats.error("stream ended")
            except grpc.aio.AioRpcError as error:
                self._failed(error)
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    def _failed(self, error: grpc.aio.AioRpcError) -> None:
        reason = rpc_error(error).reason if error.code() != grpc.StatusCode.CANCELLED else None
        if reason == "WATCHER_TOO_SLOW":
            self.cutoffs += 1
        self.stats.error(reason or error.code().name)

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        raise NotImplementedError

    async def _read_all(self, call: Any, on_response: Callable[[bytes], None]) -> None:
        """Hand every response of `call` to `on_response` until the stream ends, not reading while
        stalled (so the server's buffer fills); the call is cancelled on the way out."""
        try:
            while True:
                if not self.reading.is_set():
                    await self.reading.wait()
                raw = await call.read()
                if not isinstance(raw, bytes):  # grpc.aio.EOF
                    return
                on_response(raw)
        finally:
            call.cancel()

    def view_report(self) -> dict[str, int]:
        return self.view


class EpsyncWatcher(Watcher):
    """WatchWorkloadEndpoints, resumed with the last complete revision and every known version."""

    def _request(self) -> bytes:
        request = WatchWorkloadEndpointsRequest(node=self.node, label_selector=self.selector, allow_bookmarks=True)
        if self.revision or self.view:
            request.resource_version = self.revision
            request.known_resource_versions.update(self.view)
        else:
            request.send_initial_events = True
        return request.SerializeToString()

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        call = channel.unary_stream(WATCH_METHOD, request_serializer=None, response_deserializer=None)(self._request())
        await self._read_all(call, self._on_response)

    def _on_response(self, raw: bytes) -> None:
        now = time.time_ns()
        stats = self.stats
        stats.responses += 1
        stats.bytes += len(raw)
        if not self.synced.is_set():
            self.sync_bytes += len(raw)
        response = WatchWorkloadEndpointsResponse.FromString(raw)
        live = self.stream_synced
        view = self.view
        histogram = stats.histogram(self.cls) if live else None
        last = 0
        count = 0
        for event in response.events:
            revision = event.resource_version
            if revision > last:
                last = revision
            if event.type == BOOKMARK:
                if event.initial_events_end:
                    self._mark_synced()
                continue
            count += 1
            obj = event.object
            meta = obj.metadata
            key = f"{meta.namespace}/{meta.name}"
            if event.type == DELETED:
                view.pop(key, None)
            else:
                view[key] = meta.resource_version
            if histogram is not None:
                histogram.record((now - sent_ns_of(obj.spec.container_id)) // 1000)
        stats.events += count
        if live:
            stats.live_events += count
        stats.events_by_class[self.cls] = stats.events_by_class.get(self.cls, 0) + count
        if self.stream_synced and not response.fragment and last > self.revision:
            self.revision = last


class EtcdWatcher(Watcher):
    """A node agent on etcd: Range its prefix, Watch from the next revision; re-list after a reconnect."""

    def __init__(self, spec: Message, target: str, stats: Stats, small_window: int) -> None:
        super().__init__(spec, target, stats, small_window)
        self.prefix = etcd_node_prefix(self.node)
        self.strip = len(ETCD_PREFIX) + len(self.node) + 1

    async def _stream(self, channel: grpc.aio.Channel) -> None:
        range_end = self.prefix[:-1] + bytes([self.prefix[-1] + 1])
        listing = channel.unary_unary("/etcdserverpb.KV/Range", request_serializer=None, response_deserializer=None)
        raw = await listing(rpc_pb2.RangeRequest(key=self.prefix, range_end=range_end).SerializeToString())
        self.stats.bytes += len(raw)
        self.stats.responses += 1
        if not self.synced.is_set():
            self.sync_bytes += len(raw)
        ranged = rpc_pb2.RangeResponse.FromString(raw)
        strip = self.strip
        self.view = {kv.key[strip:].decode(): kv.mod_revision for kv in ranged.kvs}
        self.stats.events += len(ranged.kvs)
        self.stats.events_by_class[self.cls] = self.stats.events_by_class.get(self.cls, 0) + len(ranged.kvs)
        create = rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(
                key=self.prefix, range_end=range_end, start_revision=ranged.header.revision + 1
            )
        )

        async def requests() -> Any:
            yield create.SerializeToString()
            await asyncio.Event().wait()  # keep the stream open: a half-close may end the watch

        call = channel.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=None, response_deserializer=None)(
            requests()
        )
        await self._read_all(call, self._on_response)

    def _on_response(self, raw: bytes) -> None:
        now = time.time_ns()
        stats = self.stats
        stats.responses += 1
        stats.bytes += len(raw)
        if not self.synced.is_set():
            self.sync_bytes += len(raw)
        response = rpc_pb2.WatchResponse.FromString(raw)
        if response.created:
            self._mark_synced()
        if response.canceled:
            raise RuntimeError(f"etcd canceled the watch: {response.cancel_reason}")
        histogram = stats.histogram(self.cls)
        view = self.view
        strip = self.strip
        count = 0
        for event in response.events:
            kv = event.kv
            key = kv.key[strip:].decode()
            count += 1
            if event.type == 1:  # DELETE
                view.pop(key, None)
                continue
            view[key] = kv.mod_revision
            histogram.record((now - sent_ns_of(WorkloadEndpoint.FromString(kv.value).spec.container_id)) // 1000)
        stats.events += count
        stats.live_events += count
        stats.events_by_class[self.cls] = stats.events_by_class.get(self.cls, 0) + count


class Agents:
    """The watchers of this process and the commands the orchestrator sends it."""

    def __init__(self, channel: ChildChannel, mode: str, target: str) -> None:
        self.channel = channel
        self.mode = mode
        self.target = target
        self.stats = Stats()
        self.watchers: dict[int, Watcher] = {}
        self._reporter: asyncio.Task[None] | None = None

    def _make(self, spec: Message) -> Watcher:
        kind: Callable[[Message, str, Stats, int], Watcher] = EtcdWatcher if self.mode == "etcd" else EpsyncWatcher
        return kind(spec, self.target_for(int(spec["id"])), self.stats, int(spec.get("small_window", 0)))

    def target_for(self, ident: int) -> str:
        """The server watcher `ident` talks to: with several (replicas, comma-separated), they take turns."""
        targets = self.target.split(",")
        return targets[ident % len(targets)]

    async def handle(self, command: Message) -> Message | None:
        cmd = command["cmd"]
        if cmd == "start":
            if command.get("target"):
                self.target = command["target"]
            for spec in command["watchers"]:
                watcher = self.watchers[spec["id"]] = self._make(spec)
                watcher.start()
            if self._reporter is None:
                self._reporter = asyncio.create_task(self._report_loop())
            return await self._wait_synced(float(command.get("timeout", 120)))
        if cmd == "drop":
            await asyncio.gather(*(w.drop() for w in self._chosen(command)))
            return {}
        if cmd == "reconnect":
            if command.get("target"):
                self.target = command["target"]
            chosen = self._chosen(command)
            for watcher in chosen:
                watcher.target = self.target_for(watcher.id)
                watcher.start(fresh=bool(command.get("fresh")))
            return await self._wait_synced(float(command.get("timeout", 120)), chosen)
        if cmd == "stall":
            ids = set(command["ids"])
            for watcher in self.watchers.values():
                if watcher.id in ids:
                    watcher.reading.clear()
            return {}
        if cmd == "unstall":
            for watcher in self.watchers.values():
                watcher.reading.set()
            return {}
        if cmd == "counters":
            return {
                "watchers": {
                    w.id: {"cutoffs": w.cutoffs, "reconnects": w.reconnects, "synced": w.synced.is_set()}
                    for w in self.watchers.values()
                }
            }
        if cmd == "views":
            return {"views": {w.id: w.view_report() for w in self.watchers.values()}}
        if cmd == "stop":
            await asyncio.gather(*(w.drop() for w in self.watchers.values()))
            self._report()
            return {"exit": True}
        raise ValueError(f"unknown command {cmd!r}")

    def _chosen(self, command: Message) -> list[Watcher]:
        """The watchers a command names (`ids`), or all of them."""
        ids = command.get("ids")
        if ids is None:
            return list(self.watchers.values())
        wanted = set(ids)
        return [w for w in self.watchers.values() if w.id in wanted]

    async def _wait_synced(self, within: float, watchers: list[Watcher] | None = None) -> Message:
        """Wait until the watchers are in sync; report when each got there and what it took."""
        chosen = list(self.watchers.values()) if watchers is None else watchers
        started = time.monotonic()
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(w.synced.wait() for w in chosen if not w.synced.is_set()))
        except TimeoutError:
            late = sum(1 for w in chosen if not w.synced.is_set())
            raise TimeoutError(f"{late} of {len(chosen)} watchers not in sync after {within:.0f} s") from None
        return {
            "seconds": time.monotonic() - started,
            "sync": {w.id: [w.sync_seconds, w.sync_bytes] for w in chosen},
        }

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._report()

    def _report(self) -> None:
        report = self.stats.report()
        self.stats.reset()
        self.channel.send({"type": "tick", "t": time.time(), "cpu": procstat.cpu_seconds(), **report})


async def _main(args: argparse.Namespace) -> None:
    channel = child_channel()
    agents = Agents(channel, args.mode, args.target)
    await channel.serve(agents.handle)


def main() -> None:
    parser = argparse.ArgumentParser(description="epsync load test: a process of watchers")
    parser.add_argument("--mode", choices=["epsync", "etcd", "raw"], required=True)
    parser.add_argument("--target", default="")
    gcpolicy.apply()
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
