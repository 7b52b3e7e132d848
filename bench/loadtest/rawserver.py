"""Scenario 5's raw gRPC ceiling: a bare grpc.aio server streaming pre-encoded events to the same watchers.

    python -m bench.loadtest.rawserver --nodes 2000 --per-node 50 --selectors 200

It serves the same method as epsync (WatchWorkloadEndpoints, responses as pre-encoded bytes), so the
same agents connect to it unchanged, and does the least a fan-out server can: on each generated
write it encodes the event once and queues the same bytes for the node's watchers and for the
selector watchers whose selector matches (precomputed: labels never change under load); each stream
sends everything queued as one response, as epsync's watchers do. No store, no index, no validation,
no history: what is left is grpc.aio's own cost per response and per connection, which bounds what
any Python server on grpc.aio can deliver on this machine.

It generates the writes itself, paced like the writer, and stamps each with its send time, so the
agents measure latency exactly as they do against epsync.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator

import grpc

from bench.loadtest import procstat
from bench.loadtest.control import ChildChannel, Message, child_channel
from bench.loadtest.payload import Payloads
from bench.population import Shape, membership, node_name, node_of
from epsync.server import gcpolicy
from epsync.sync.wire import MODIFIED, bookmark_entry, event_entry, join_response, object_with_version
from epsync.v1.workload_endpoint_service_pb2 import WatchWorkloadEndpointsRequest

SERVICE = "epsync.v1.WorkloadEndpointService"


class _Stream:
    """One watcher's queue of entries, drained into one response at a time."""

    __slots__ = ("entries", "wakeup")

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.wakeup = asyncio.Event()

    def push(self, entry: bytes) -> None:
        self.entries.append(entry)
        self.wakeup.set()

    async def next(self) -> bytes:
        while not self.entries:
            self.wakeup.clear()
            await self.wakeup.wait()
        entries, self.entries = self.entries, []
        return join_response(entries)


class RawServer:
    def __init__(self, channel: ChildChannel, shape: Shape, selectors: int) -> None:
        self.channel = channel
        self.shape = shape
        self.membership = membership(shape, selectors)
        self.payloads = Payloads(shape, stored_form=True)
        self.by_group: dict[str, set[_Stream]] = {}
        self.revision = 1
        self.store: dict[int, int] = {}  # endpoint index -> revision of its last event
        self.texts_of: list[tuple[str, ...]] = []
        self.server: grpc.aio.Server | None = None
        self.sent_events = 0

    async def watch(
        self,
        request: WatchWorkloadEndpointsRequest,
        context: grpc.aio.ServicerContext[WatchWorkloadEndpointsRequest, bytes],
    ) -> AsyncIterator[bytes]:
        group = f"node:{request.node}" if request.node else f"selector:{request.label_selector}"
        stream = _Stream()
        stream.push(bookmark_entry(self.revision, initial_events_end=True))
        members = self.by_group.setdefault(group, set())
        members.add(stream)
        try:
            while True:
                yield await stream.next()
        finally:
            members.discard(stream)

    async def start(self, port: int) -> int:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)])
        handler = grpc.unary_stream_rpc_method_handler(
            self.watch,
            request_deserializer=WatchWorkloadEndpointsRequest.FromString,
            response_serializer=None,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"WatchWorkloadEndpoints": handler}),)
        )
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        self.server = server
        return bound

    async def handle(self, command: Message) -> Message | None:
        cmd = command["cmd"]
        if cmd == "prepare":
            started = time.perf_counter()
            for j in range(self.shape.endpoints):
                self.payloads.base(j)
            members = self.membership.selectors_of_endpoint
            texts = self.membership.selectors
            self.texts_of = [tuple({f"selector:{texts[s]}" for s in members[j]}) for j in range(self.shape.endpoints)]
            return {"seconds": time.perf_counter() - started}
        if cmd == "run":
            return await self.run(float(command["rate"]), float(command["duration"]))
        if cmd == "store":
            store = {}
            for j, version in self.store.items():
                store[self.membership.keys[j]] = [node_name(node_of(j, self.shape)), version]
            return {"store": store}
        if cmd == "stop":
            if self.server is not None:
                await self.server.stop(0)
            return {"exit": True}
        raise ValueError(f"unknown command {cmd!r}")

    def _emit(self, j: int) -> None:
        self.revision += 1
        revision = self.revision
        sent = time.time_ns()
        obj = object_with_version(self.payloads.endpoint_bytes(j, sent, revision), revision)
        entry = event_entry(MODIFIED, obj, revision)
        self.store[j] = revision
        groups = self.by_group
        for stream in groups.get(f"node:{node_name(node_of(j, self.shape))}", ()):
            stream.push(entry)
            self.sent_events += 1
        for text in self.texts_of[j]:
            for stream in groups.get(text, ()):
                stream.push(entry)
                self.sent_events += 1

    async def run(self, rate: float, duration: float) -> Message:
        rng = random.Random(self.revision)
        cpu0 = procstat.cpu_seconds()
        started = time.perf_counter()
        end = started + duration
        issued = 0
        while (now := time.perf_counter()) < end:
            due = int((now - started) * rate)
            while issued < due:
                self._emit(rng.randrange(self.shape.endpoints))
                issued += 1
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        return {
            "offered_rate": rate,
            "duration": elapsed,
            "sent": issued,
            "achieved_rate": issued / elapsed,
            "sent_rate": issued / elapsed,
            "cpu_seconds": procstat.cpu_seconds() - cpu0,
        }


async def _main(args: argparse.Namespace) -> None:
    channel = child_channel()
    raw = RawServer(
        channel, Shape(args.nodes, args.per_node, namespaces=args.namespaces, seed=args.seed), args.selectors
    )
    port = await raw.start(args.port)
    channel.send({"type": "listening", "port": port})
    await channel.serve(raw.handle)


def main() -> None:
    parser = argparse.ArgumentParser(description="epsync load test: the raw gRPC ceiling server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--per-node", type=int, required=True)
    parser.add_argument("--selectors", type=int, required=True)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    gcpolicy.apply()
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
