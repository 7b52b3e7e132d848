"""`epsync serve --workers N`: one server as several processes on one port (server/workers.py).

Run as a user runs it: the owner and its workers are real processes; which of them a connection
lands on is the kernel's choice (SO_REUSEPORT), so the tests open connections until both have
some, and read from /proc which process holds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from bench.loadtest import procstat

from epsync.client import Client
from epsync.client.view import Backoff
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from tests.conftest import ServerProcess, serve_process
from tests.factories import endpoint

FAST = Backoff(initial=0.02, maximum=0.2)


def running(pid: int) -> bool:
    """Whether the process exists and has not ended (a zombie has: nobody may reap it in a container)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def serving_pids(server: ServerProcess) -> dict[int, int]:
    """Per process of the server (owner and workers), how many client connections it holds."""
    pids = [server.process.pid, *procstat.children(server.process.pid)]
    return {pid: len(held) for pid, held in procstat.connections_by_process(pids, server.port).items()}


async def workers_serving(server: ServerProcess, count: int) -> set[int]:
    """Wait until the owner has `count` workers that have logged that they serve; their pids."""
    async with asyncio.timeout(30):
        while sum("worker-" in line and "epsync serving on" in line for line in server.log) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the log is read by another task; polled
    return set(procstat.children(server.process.pid))


@contextlib.asynccontextmanager
async def clients_on_every_process(server: ServerProcess, processes: int) -> AsyncIterator[list[Client]]:
    """Connected clients, at least one on each of the server's processes."""
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        while len(clients) < 64:
            client = await stack.enter_async_context(Client(f"127.0.0.1:{server.port}", timeout=10))
            await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest())  # connects
            clients.append(client)
            held = serving_pids(server)
            if len(clients) >= 4 and sum(1 for n in held.values() if n) == processes:
                break
        assert sum(1 for n in serving_pids(server).values() if n) == processes, serving_pids(server)
        yield clients


async def test_every_process_serves_and_every_watcher_sees_every_write(tmp_path: Path) -> None:
    async with serve_process("--data-dir", str(tmp_path / "data"), "--workers", "2") as server:
        assert len(await workers_serving(server, 1)) == 1
        async with clients_on_every_process(server, 2) as clients:
            views = [c.watch(node=f"node-{i % 2}", backoff=FAST) for i, c in enumerate(clients)]
            runs = [asyncio.create_task(_run(view)) for view in views]
            # Writes through every process: creates, updates and deletes, each checked by the next.
            revisions = []
            for i, client in enumerate(clients):
                created = await client.create_endpoint(endpoint(f"wep-{i}", node=f"node-{i % 2}"))
                created.metadata.labels["round"] = "2"
                updated = await clients[-1 - i].update_endpoint(created)
                revisions.append(updated.metadata.resource_version)
            for i in range(0, len(clients), 3):
                await clients[(i + 1) % len(clients)].delete_endpoint(f"wep-{i}")
            # The last delete's revision, as a List after it (on any process) reports at least it.
            final = max([*revisions, *[await _listed_revision(c, max(revisions)) for c in clients]])
            expected = {
                node: {
                    f"default/{e.metadata.name}": e
                    for e in (
                        await clients[0].list_endpoints_page(
                            wep_pb.ListWorkloadEndpointsRequest(node=node, min_resource_version=final)
                        )
                    ).items
                }
                for node in ("node-0", "node-1")
            }
            # A node's watcher hears nothing of the other node's writes (and bookmarks come once a minute):
            # it is done when it holds what the List says.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while not all(v.objects == expected[f"node-{i % 2}"] for i, v in enumerate(views)):  # noqa: ASYNC110
                        await asyncio.sleep(0.02)
            for i, view in enumerate(views):
                assert view.objects == expected[f"node-{i % 2}"]
            # A listing goes on through any process: they share the store's secret that signs page tokens.
            listed, token = [], ""
            for turn in range(100):
                request = wep_pb.ListWorkloadEndpointsRequest(page_size=1, page_token=token, min_resource_version=final)
                page = await clients[turn % len(clients)].list_endpoints_page(request)
                listed += [e.metadata.name for e in page.items]
                token = page.next_page_token
                if not token:
                    break
            assert listed == sorted(name for names in expected.values() for name in (k.split("/")[1] for k in names))
            for run in runs:
                run.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.process.wait(), 30) == 0
    assert not any("Traceback" in line for line in server.log), "".join(server.log)


async def _listed_revision(client: Client, at_least: int) -> int:
    request = wep_pb.ListWorkloadEndpointsRequest(min_resource_version=at_least)
    return (await client.list_endpoints_page(request)).resource_version


async def _run(view: object) -> None:
    async for _ in view:  # type: ignore[attr-defined]
        pass


async def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    async with serve_process("--data-dir", str(tmp_path / "data"), "--workers", "2") as server:
        (worker,) = await workers_serving(server, 1)
        os.kill(worker, signal.SIGKILL)
        (replacement,) = await workers_serving(server, 2)
        assert replacement != worker
        async with clients_on_every_process(server, 2) as clients:
            created = [await client.create_endpoint(endpoint(f"after-{i}")) for i, client in enumerate(clients)]
            # Read at the last write's revision: another process's cache may not have applied it yet.
            newest = max(e.metadata.resource_version for e in created)
            request = wep_pb.ListWorkloadEndpointsRequest(min_resource_version=newest)
            page = await clients[0].list_endpoints_page(request)
            assert not page.next_page_token
            names = {e.metadata.name for e in page.items}
            assert names == {f"after-{i}" for i in range(len(clients))}


async def test_workers_die_with_their_owner_and_acknowledged_writes_survive(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    async with serve_process("--data-dir", data_dir, "--workers", "2") as server:
        workers = await workers_serving(server, 1)
        async with clients_on_every_process(server, 2) as clients:
            acknowledged = [await c.create_endpoint(endpoint(f"wep-{i}")) for i, c in enumerate(clients)]
        server.process.send_signal(signal.SIGKILL)
        assert await server.process.wait() == -signal.SIGKILL
        async with asyncio.timeout(10):
            while any(running(pid) for pid in workers):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    async with serve_process("--data-dir", data_dir, "--workers", "2") as server:
        await workers_serving(server, 1)
        async with Client(f"127.0.0.1:{server.port}") as client:
            for written in acknowledged:
                assert await client.get_endpoint(written.metadata.name) == written
