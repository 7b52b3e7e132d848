"""`epsync serve --workers N`: one server as N processes on one port, fed from one change feed.

A Python process serves from one core; the gRPC work of many watchers needs more. The process
that `epsync serve` starts is the owner: it opens the datastore, serves the API like any single
server, and serves its datastore to the others on a Unix socket in a private directory
(store/remote). It then starts N - 1 worker processes (server/worker.py), each an EpsyncServer on
a RemoteDatastore: a full replica of the cache and index, fed from the owner's change feed as
Typha replicas are fed from one datastore, sending its writes to the owner, which commits them.
All N listen on the same address with SO_REUSEPORT, and the kernel spreads new connections over
them. Why full replicas rather than thin front processes: README, "Every core".

The owner keeps its workers running: one that exits is started again after a pause (a worker
that loses the owner's feed exits, and comes back from a new snapshot). Workers die with the
owner: the kernel kills them when it does (PR_SET_PDEATHSIG), and a lost feed ends them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import grpc

from epsync.server.config import ServerConfig
from epsync.store.base import Datastore
from epsync.store.remote import serve_store

log = logging.getLogger(__name__)

# How the owner hands a worker what it needs: the config as JSON, where the store is, which worker it is.
CONFIG_ENV = "EPSYNC_WORKER_CONFIG"
SOCKET_ENV = "EPSYNC_WORKER_SOCKET"
INDEX_ENV = "EPSYNC_WORKER_INDEX"
LOG_LEVEL_ENV = "EPSYNC_WORKER_LOG_LEVEL"
OWNER_PID_ENV = "EPSYNC_WORKER_OWNER_PID"
RESTART_PAUSE_SECONDS = 1.0


class AddressInUse(Exception):
    """The listen address is held by something else; the message says which and what to do."""


def claim_address(listen: str) -> str:
    """`listen` with its port fixed (a free one for port 0), once no other socket holds it.

    The workers bind with SO_REUSEPORT, which would let them join another server's processes on a
    port that server also opened with SO_REUSEPORT; a plain bind first fails on any port in use.
    """
    host, _, port_text = listen.rpartition(":")
    bare_host = host.strip("[]")
    try:
        port = int(port_text)
        family, kind, proto, _, address = socket.getaddrinfo(
            bare_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
            probe.bind(address)
            port = probe.getsockname()[1]
    except (OSError, ValueError) as error:
        raise AddressInUse(
            f"cannot listen on {listen}: the address is in use or not this machine's ({error}); choose another with "
            "--listen"
        ) from None
    return f"{host}:{port}"


class WorkerPool:
    """The owner's side of `--workers`: its store served on a Unix socket, and N - 1 worker processes."""

    def __init__(self, config: ServerConfig, store: Datastore, log_level: str = "INFO") -> None:
        self.config = config
        self.store = store
        self.log_level = log_level
        self._directory = Path(tempfile.mkdtemp(prefix="epsync-owner-"))  # mode 0700: this user's only
        self.socket_path = self._directory / "store.sock"
        self._service: grpc.aio.Server | None = None
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._supervisors: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        self._service, _ = await serve_store(self.store, self.socket_path)
        loop = asyncio.get_running_loop()
        for index in range(1, self.config.workers):
            self._supervisors.append(loop.create_task(self._supervise(index), name=f"epsync-worker-{index}"))

    async def _supervise(self, index: int) -> None:
        environment = os.environ | {
            # Only the owner serves metrics (server/metrics.py): the workers would all want its address.
            CONFIG_ENV: self.config.model_copy(update={"metrics_listen": None}).model_dump_json(),
            SOCKET_ENV: str(self.socket_path),
            INDEX_ENV: str(index),
            LOG_LEVEL_ENV: self.log_level,
            OWNER_PID_ENV: str(os.getpid()),
        }
        while not self._stopping:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "epsync.server.worker", env=environment, stdin=asyncio.subprocess.DEVNULL
            )
            self._processes[index] = process
            code = await process.wait()
            if self._stopping:
                return
            log.warning("worker %d (pid %d) exited with %d; starting it again", index, process.pid, code)
            await asyncio.sleep(RESTART_PAUSE_SECONDS)

    async def stop(self, grace: float) -> None:
        """Stop the workers (SIGTERM: each drains its calls within `grace`), then the store service."""
        self._stopping = True
        running = [p for p in self._processes.values() if p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace + 5)
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop in time; killing it", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        if self._service is not None:
            await self._service.stop(0)
            self._service = None
        shutil.rmtree(self._directory, ignore_errors=True)
