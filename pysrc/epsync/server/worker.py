"""A worker process of `epsync serve --workers N` (started by the owner, server/workers.py; not by hand).

It serves the API on the owner's address from a RemoteDatastore on the owner's socket, until
SIGTERM (a graceful stop, as the owner's) or until it loses the owner's feed (it exits 1, and the
owner starts it again from a new snapshot).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

from epsync.server import gcpolicy
from epsync.server.app import EpsyncServer, StartupError
from epsync.server.config import ServerConfig
from epsync.server.logs import configure as configure_logs
from epsync.server.workers import CONFIG_ENV, INDEX_ENV, LOG_LEVEL_ENV, OWNER_PID_ENV, SOCKET_ENV
from epsync.store.base import DatastoreError
from epsync.store.remote import RemoteDatastore

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> None:
    """Have the kernel kill this process when the owner dies, even by kill -9 (Linux; elsewhere the lost feed does)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(os.environ[OWNER_PID_ENV]):  # the owner died before the request took effect
        sys.exit(1)


async def serve_worker(config: ServerConfig, socket_path: Path, index: int) -> int:
    """Serve until SIGTERM (returns 0) or until the owner's feed is lost (returns 1)."""
    store = RemoteDatastore(socket_path)
    server = EpsyncServer(config, store=store)
    try:
        await server.start()
    except (StartupError, DatastoreError) as error:
        log.error("worker %d cannot start: %s", index, error)
        await server.stop(grace=0)
        return 1
    gcpolicy.freeze_startup()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    stop_wait = asyncio.ensure_future(stopping.wait())
    lost_wait = asyncio.ensure_future(store.lost.wait())
    await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    lost_wait.cancel()
    lost = store.lost.is_set() and not stopping.is_set()
    await server.stop(grace=0 if lost else None)
    return 1 if lost else 0


def main() -> int:
    die_with_parent()
    index = int(os.environ[INDEX_ENV])
    config = ServerConfig.model_validate_json(os.environ[CONFIG_ENV])
    configure_logs(os.environ.get(LOG_LEVEL_ENV, "INFO"), config.log_format, f"worker-{index}")
    gcpolicy.apply()  # a worker allocates per write and per event as the owner does (an exec'd process, not a fork)
    return asyncio.run(serve_worker(config, Path(os.environ[SOCKET_ENV]), index))


if __name__ == "__main__":
    sys.exit(main())
