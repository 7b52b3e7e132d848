"""The load-test writer process: loads the cluster, then drives a paced rate of endpoint updates.

    python -m bench.loadtest.writer --mode epsync --target 127.0.0.1:50051 --nodes 2000 --per-node 50

epsync: every write goes through a WriteWorkloadEndpoints stream, pipelined up to the server's
in-flight bound (1,000); the writes that fall due together (one pacing step, or a load's burst) go in
one request's `batch`, as an orchestrator plugin with several changes at hand would send them. etcd:
one unary Put per write on one connection, as many in flight. Each write updates a random endpoint
(never one whose previous write is still unanswered: no orchestrator rewrites an endpoint within
milliseconds) with a new containerID carrying the send time (`population.container_id`).

A run is paced: every millisecond or so it sends what the offered rate says is due by now, as far as
the in-flight bound allows, so it reports offered against achieved rate honestly when the server
cannot keep up. Ack latency (write sent to response) is recorded beside the watchers' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench.loadtest import procstat
from bench.loadtest.control import ChildChannel, Message, child_channel
from bench.loadtest.histogram import Histogram
from bench.loadtest.payload import Payloads, field
from bench.population import Shape, profiles
from epsync.server import gcpolicy
from epsync.v1.profile_service_pb2 import UpdateProfileRequest
from epsync.v1.profile_service_pb2_grpc import ProfileServiceStub
from epsync.v1.workload_endpoint_service_pb2 import WriteWorkloadEndpointsResponse

WRITE_METHOD = "/epsync.v1.WorkloadEndpointService/WriteWorkloadEndpoints"
PUT_METHOD = "/etcdserverpb.KV/Put"


class WriteFailed(RuntimeError):
    pass


class Writer:
    def __init__(self, channel: ChildChannel, mode: str, target: str, shape: Shape, window: int, streams: int) -> None:
        self.channel = channel
        self.mode = mode
        self.target = target
        self.shape = shape
        self.window = window
        self.payloads = Payloads(shape, stored_form=mode == "etcd")
        # One channel per server (replicas: comma-separated targets); write streams take turns over them.
        self.channels = [
            grpc.aio.insecure_channel(one, options=[("grpc.max_receive_message_length", 64 << 20)])
            for one in target.split(",")
        ]
        self.grpc = self.channels[0]
        self.generation = 0
        self.in_flight: set[int] = set()
        self.slots = asyncio.Semaphore(window)
        self.sent = self.acked = self.failed = 0
        self.first_error = ""
        self.ack_latency = Histogram()
        self.streams = streams
        self._streams: list[_WriteStream] = []
        self._reporter: asyncio.Task[None] | None = None

    async def handle(self, command: Message) -> Message | None:
        cmd = command["cmd"]
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._report_loop())
        if cmd == "prepare":
            started = time.perf_counter()
            for j in range(self.shape.endpoints):
                self.payloads.base(j)
            return {"seconds": time.perf_counter() - started}
        if cmd == "load":
            return await self.load()
        if cmd == "run":
            return await self.run(float(command["rate"]), float(command["duration"]))
        if cmd == "burst":
            endpoints = command.get("endpoints")
            return await self.burst(int(command.get("count", 0)), None if endpoints is None else list(endpoints))
        if cmd == "reset":
            # The server restarted: the streams broke with it; the next write opens new ones.
            streams, self._streams = self._streams, []
            for stream in streams:
                await stream.close()
            return {}
        if cmd == "stop":
            for stream in self._streams:
                await stream.close()
            for opened in self.channels:
                await opened.close(grace=None)
            return {"exit": True}
        raise ValueError(f"unknown command {cmd!r}")

    # --- writes -----------------------------------------------------------------------------------

    async def _send(self, j: int) -> None:
        """Start one write of endpoint `j` (a slot is already held); completion is handled elsewhere."""
        self.generation += 1
        self.in_flight.add(j)
        sent = time.time_ns()
        self.sent += 1
        if self.mode == "epsync":
            stream = await self._get_stream()
            await stream.write(
                self.generation, j, sent, self.payloads.write_request(self.generation, j, sent, self.generation)
            )
        else:
            task = asyncio.create_task(self._put(j, sent, self.payloads.put_request(j, sent, self.generation)))
            task.add_done_callback(_retrieve)

    async def _get_stream(self) -> _WriteStream:
        """The streams in turn: writes spread over `streams` streams, as over several orchestrator plugins."""
        if len(self._streams) < self.streams:
            stream = _WriteStream(self, self.channels[len(self._streams) % len(self.channels)])
            await stream.open()
            self._streams.append(stream)
            return stream
        return self._streams[self.generation % self.streams]

    async def _put(self, j: int, sent: int, request: bytes) -> None:
        put = self.grpc.unary_unary(PUT_METHOD, request_serializer=None, response_deserializer=None)
        try:
            await put(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            self.done(j, sent, f"{error.code().name}: {error.details()}")
            return
        self.done(j, sent, "")

    def done(self, j: int, sent: int, error: str) -> None:
        self.in_flight.discard(j)
        self.slots.release()
        if error:
            self.failed += 1
            self.first_error = self.first_error or error
            return
        self.acked += 1
        self.ack_latency.record((time.time_ns() - sent) // 1000)

    def _pick(self, rng: random.Random) -> int:
        while True:
            j = rng.randrange(self.shape.endpoints)
            if j not in self.in_flight:
                return j

    async def _drain(self, within: float) -> None:
        """Wait until every write has been answered."""
        async with asyncio.timeout(within):
            while self.in_flight:  # noqa: ASYNC110 (polled: answers arrive on several streams and tasks)
                await asyncio.sleep(0.005)

    def _counts(self) -> tuple[int, int, int]:
        return self.sent, self.acked, self.failed

    def _check(self) -> None:
        if self.failed:
            raise WriteFailed(f"{self.failed} writes failed; the first: {self.first_error}")

    async def load(self) -> Message:
        """Create every profile and endpoint, as fast as the in-flight bound allows."""
        started = time.perf_counter()
        if self.mode == "epsync":
            stub = ProfileServiceStub(self.grpc)
            await asyncio.gather(
                *(stub.UpdateProfile(UpdateProfileRequest(profile=p, allow_missing=True)) for p in profiles(self.shape))
            )
        for j in range(self.shape.endpoints):
            await self.slots.acquire()
            await self._send(j)
        await self._drain(600)
        self._check()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "rate": self.shape.endpoints / seconds}

    async def burst(self, count: int, endpoints: list[int] | None = None) -> Message:
        """Update `endpoints` (or `count` distinct random ones) once each, as fast as possible."""
        started = time.perf_counter()
        chosen = (
            endpoints
            if endpoints is not None
            else random.Random(self.generation).sample(range(self.shape.endpoints), count)
        )
        for j in chosen:
            await self.slots.acquire()
            await self._send(j)
        await self._drain(120)
        self._check()
        return {"seconds": time.perf_counter() - started, "keys": len(chosen)}

    async def run(self, rate: float, duration: float) -> Message:
        """Offer `rate` writes/s for `duration` s; then wait for the writes still in flight."""
        rng = random.Random(self.generation)
        sent0, acked0, _ = self._counts()
        self.ack_latency = Histogram()
        cpu0 = procstat.cpu_seconds()
        started = time.perf_counter()
        end = started + duration
        issued = 0
        while (now := time.perf_counter()) < end:
            due = int((now - started) * rate)
            while issued < due:
                if self.slots.locked():
                    break
                await self.slots.acquire()
                await self._send(self._pick(rng))
                issued += 1
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - started
        acked_in_time = self.acked - acked0
        await self._drain(60)
        self._check()
        return {
            "offered_rate": rate,
            "duration": elapsed,
            "sent": self.sent - sent0,
            "achieved_rate": acked_in_time / elapsed,
            "sent_rate": (self.sent - sent0) / elapsed,
            "ack_latency": self.ack_latency.to_json(),
            "cpu_seconds": procstat.cpu_seconds() - cpu0,
        }

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.channel.send(
                {
                    "type": "tick",
                    "t": time.time(),
                    "cpu": procstat.cpu_seconds(),
                    "sent": self.sent,
                    "acked": self.acked,
                    "in_flight": len(self.in_flight),
                }
            )


# The most writes one request's batch may carry (the server's in-flight bound per stream).
MAX_BATCH = 1000
_BATCH_FIELD = 5  # WriteWorkloadEndpointsRequest.batch


class _WriteStream:
    """One WriteWorkloadEndpoints stream; the writes staged in one turn of the event loop go as one batch, and
    answers come back in request order."""

    def __init__(self, writer: Writer, channel: grpc.aio.Channel) -> None:
        self.writer = writer
        self.channel = channel
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        # Per request sent, its writes' (request id, j, sent) in order.
        self.pending: collections.deque[list[tuple[int, int, int]]] = collections.deque()
        self.staged: list[tuple[tuple[int, int, int], bytes]] = []
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        method = self.channel.stream_stream(WRITE_METHOD, request_serializer=None, response_deserializer=None)
        self.call = method(self._requests())
        self.reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[bytes]:
        while (request := await self.queue.get()) is not None:
            yield request

    async def write(self, request_id: int, j: int, sent: int, request: bytes) -> None:
        if self.reader is not None and self.reader.done():
            self.reader.result()
            raise WriteFailed("the write stream ended")
        if not self.staged:
            asyncio.get_running_loop().call_soon(self._flush)
        self.staged.append(((request_id, j, sent), request))

    def _flush(self) -> None:
        """Send what was staged in this turn of the loop: one request per up to MAX_BATCH writes."""
        staged, self.staged = self.staged, []
        for start in range(0, len(staged), MAX_BATCH):
            chunk = staged[start : start + MAX_BATCH]
            self.pending.append([entry for entry, _ in chunk])
            self.queue.put_nowait(b"".join([field(_BATCH_FIELD, request) for _, request in chunk]))

    async def _read(self) -> None:
        while True:
            raw = await self.call.read()
            if not isinstance(raw, bytes):  # grpc.aio.EOF
                return
            response = WriteWorkloadEndpointsResponse.FromString(raw)
            writes = self.pending.popleft()
            if response.status.code or len(response.batch) != len(writes):
                raise WriteFailed(f"a batch of {len(writes)} writes was refused: {response.status.message}")
            for (request_id, j, sent), result in zip(writes, response.batch, strict=True):
                if result.request_id != str(request_id):
                    raise WriteFailed(f"response {result.request_id} out of order (expected {request_id})")
                code = result.status.code
                self.writer.done(j, sent, f"code {code}: {result.status.message}" if code else "")

    async def close(self) -> None:
        self.queue.put_nowait(None)
        if self.reader is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self.reader
            self.reader.cancel()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"write task failed: {task.exception()!r}", flush=True)


async def _main(args: argparse.Namespace) -> None:
    channel = child_channel()
    shape = Shape(args.nodes, args.per_node, namespaces=args.namespaces, seed=args.seed)
    writer = Writer(channel, args.mode, args.target, shape, args.window, args.streams)
    await channel.serve(writer.handle)


def main() -> None:
    parser = argparse.ArgumentParser(description="epsync load test: the writer")
    parser.add_argument("--mode", choices=["epsync", "etcd"], required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--per-node", type=int, required=True)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, default=1000, help="writes in flight at most, over all streams")
    parser.add_argument("--streams", type=int, default=1, help="epsync: WriteWorkloadEndpoints streams to spread over")
    gcpolicy.apply()
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
