"""kill -9 at random moments under load, round after round: no acknowledged write is ever lost.

Each round starts `epsync serve` (as a user runs it: the owner and its worker processes) on the
same data directory and port, runs unary writers and a write stream, each writing keys of its
own with at most one write in flight per key, and a watcher; after a random time it kills the
owner with SIGKILL (its workers die with it), starts it again, and checks:

- every key holds its last acknowledged state, or the state of the one write that was in flight
  on it when the server died (whose outcome nobody was told);
- revisions never go back: the first write after the restart gets a revision above every one
  acknowledged before;
- the watcher, resuming across the crash by itself, holds exactly what a List says.

`make test` runs a few rounds (EPSYNC_CRASH_ROUNDS, default 3); `make test-crash` runs many.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from epsync.client import Client
from epsync.client.view import Backoff
from epsync.errors import EpsyncError
from epsync.v1 import workload_endpoint_service_pb2 as pb
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from tests.conftest import free_port, serve_process
from tests.factories import endpoint

ROUNDS = int(os.environ.get("EPSYNC_CRASH_ROUNDS", "3"))
UNARY_WRITERS = 4
KEYS_PER_WRITER = 10
STREAM_KEYS = 40

# A key's state as the checks compare it: absent (None), or its generation label.
State = str | None


@dataclass
class Key:
    """What one key's writer knows: the last acknowledged state and its revision, and the write in flight."""

    acked: State = None
    acked_revision: int = 0
    in_flight: list[State] = field(default_factory=list)  # at most one; kept until answered


@dataclass
class Ledger:
    keys: dict[str, Key] = field(default_factory=dict)
    acknowledged: int = 0

    def key(self, name: str) -> Key:
        return self.keys.setdefault(name, Key())

    @property
    def highest_revision(self) -> int:
        return max((k.acked_revision for k in self.keys.values()), default=0)


def state_of(obj: WorkloadEndpoint | None) -> State:
    return None if obj is None else obj.metadata.labels.get("gen", "")


def versioned(name: str, generation: int) -> WorkloadEndpoint:
    return endpoint(name, node=f"node-{hash(name) % 3}", labels={"gen": str(generation)})


async def unary_writer(client: Client, ledger: Ledger, writer: int, rng: random.Random) -> None:
    names = [f"u{writer}-{k}" for k in range(KEYS_PER_WRITER)]
    generation = 0
    while True:
        name = rng.choice(names)
        key = ledger.key(name)
        generation += 1
        delete = rng.random() < 0.2
        intended: State = None if delete else str(generation)
        key.in_flight = [intended]
        try:
            if delete:
                response = await client.delete_endpoint(name, allow_missing=True)
                revision = response.resource_version
            else:
                stored = await client.update_endpoint(versioned(name, generation), allow_missing=True)
                revision = stored.metadata.resource_version
        except EpsyncError:
            return  # the server is gone: this write's outcome is unknown, and stays in flight
        key.acked, key.in_flight = intended, []
        key.acked_revision = max(key.acked_revision, revision)
        ledger.acknowledged += 1


async def stream_writer(client: Client, ledger: Ledger, rng: random.Random) -> None:
    """One write stream, pipelined over STREAM_KEYS keys, never two writes of one key unanswered."""
    names = [f"s-{k}" for k in range(STREAM_KEYS)]
    answered = {name: asyncio.Event() for name in names}
    for event in answered.values():
        event.set()
    sent: asyncio.Queue[tuple[str, State]] = asyncio.Queue()

    async def requests() -> AsyncIterator[pb.WriteWorkloadEndpointsRequest]:
        generation = 0
        while True:
            name = rng.choice(names)
            await answered[name].wait()
            answered[name].clear()
            generation += 1
            intended: State = str(generation)
            ledger.key(name).in_flight = [intended]
            await sent.put((name, intended))
            update = pb.UpdateWorkloadEndpointRequest(workload_endpoint=versioned(name, generation), allow_missing=True)
            yield pb.WriteWorkloadEndpointsRequest(request_id=name, update=update)

    with contextlib.suppress(EpsyncError):
        async for response in client.write_endpoints(requests()):
            name, intended = sent.get_nowait()
            assert response.request_id == name
            if response.status.code:
                return
            key = ledger.key(name)
            key.acked, key.in_flight = intended, []
            key.acked_revision = max(key.acked_revision, response.workload_endpoint.metadata.resource_version)
            ledger.acknowledged += 1
            answered[name].set()


async def check_round(client: Client, ledger: Ledger) -> int:
    """Every key against what its writer knows; the number of keys whose state was lost (0)."""
    stored = {e.metadata.name: e async for e in client.list_endpoints()}
    lost = 0
    for name, key in ledger.keys.items():
        now = state_of(stored.get(name))
        allowed = {key.acked, *key.in_flight}
        if now not in allowed:
            lost += 1
            print(f"LOST: {name} holds {now!r}; acknowledged {key.acked!r}, in flight {key.in_flight!r}")
        elif now == key.acked and now is not None and not key.in_flight:
            assert stored[name].metadata.resource_version >= key.acked_revision
        # Settle: what is stored is now what this key is known to hold.
        key.acked, key.in_flight = now, []
    return lost


@pytest.mark.slow
@pytest.mark.timeout(60 + 3 * ROUNDS)
async def test_no_acknowledged_write_is_lost_to_kill_9(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("EPSYNC_CRASH_SEED", "20261202")))
    port = free_port()
    data = str(tmp_path / "data")
    args = ("--data-dir", data, "--listen", f"127.0.0.1:{port}", "--workers", "2")
    ledger = Ledger()
    lost = 0
    async with Client(f"127.0.0.1:{port}", timeout=10) as watching:
        view = watching.watch(backoff=Backoff(initial=0.05, maximum=0.5))
        watch = asyncio.create_task(_run(view))
        try:
            for round_number in range(ROUNDS):
                async with serve_process(*args) as server, Client(f"127.0.0.1:{server.port}", timeout=10) as client:
                    lost += await check_round(client, ledger)
                    before = ledger.highest_revision
                    try:
                        # New content each round: an identical update would change nothing (SPEC §5).
                        probe = await client.update_endpoint(versioned("probe", round_number), allow_missing=True)
                    except EpsyncError:
                        print("".join(server.log))
                        raise
                    assert probe.metadata.resource_version > before, "a revision went back after the restart"
                    writers = [asyncio.create_task(unary_writer(client, ledger, w, rng)) for w in range(UNARY_WRITERS)]
                    writers.append(asyncio.create_task(stream_writer(client, ledger, rng)))
                    await asyncio.sleep(rng.uniform(0.3, 1.5))
                    server.process.send_signal(signal.SIGKILL)
                    assert await server.process.wait() == -signal.SIGKILL
                    await asyncio.wait_for(asyncio.gather(*writers), 30)
            async with serve_process(*args) as server, Client(f"127.0.0.1:{server.port}", timeout=10) as client:
                lost += await check_round(client, ledger)
                expected = {f"default/{e.metadata.name}": e async for e in client.list_endpoints()}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(20):
                        while view.objects != expected:  # noqa: ASYNC110 - the view runs in its own task
                            await asyncio.sleep(0.05)
                assert view.objects == expected
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
    print(f"crash test: {ROUNDS} rounds, {ledger.acknowledged:,} acknowledged writes, {lost} lost")
    assert ledger.acknowledged > ROUNDS * 50
    assert lost == 0


async def _run(view: object) -> None:
    async for _ in view:  # type: ignore[attr-defined]
        pass
