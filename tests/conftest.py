"""Shared fixtures: a real epsync server on a loopback port the OS picks, on each datastore.

Every test that takes `server` (or `datastore_settings`) runs twice: on the embedded SQLite store
in a temporary directory, and on a real etcd (one per test session, a fresh key prefix per test).
A test about one backend's nature is marked `@pytest.mark.sqlite_only`; a test that takes seconds
is marked `@pytest.mark.slow` (`make check` leaves those to `make test`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from epsync.client import Client
from epsync.server.app import EpsyncServer
from epsync.server.config import ServerConfig

if TYPE_CHECKING:
    from tests.etcd_fixture import EtcdServer

pytest_plugins = ["tests.etcd_fixture"]  # the `etcd` and `etcd_client` fixtures: a real etcd
REPO = Path(__file__).resolve().parent.parent


def server_config(data_dir: Path, **overrides: Any) -> ServerConfig:
    """A server config for tests: any free port, short waits; `overrides` as ServerConfig fields."""
    settings: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": data_dir,
        "grace_seconds": 0.5,
        "min_revision_wait_seconds": 0.3,
    }
    return ServerConfig(**(settings | overrides))


BACKENDS = ("sqlite", "etcd")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The etcd variant of a test about the embedded store (marked, or taking its `sqlite_store`) is not
    # collected at all, rather than skipped.
    items[:] = [
        item
        for item in items
        if not (
            "[etcd" in item.nodeid
            and (item.get_closest_marker("sqlite_only") or "sqlite_store" in getattr(item, "fixturenames", ()))
        )
    ]


@pytest.fixture(params=BACKENDS)
def datastore_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """ServerConfig settings selecting this run's datastore."""
    if request.param == "sqlite":
        return {}
    etcd: EtcdServer = request.getfixturevalue("session_etcd")
    return {"datastore": "etcd", "etcd_endpoints": (etcd.endpoint,), "etcd_prefix": f"/test-{uuid.uuid4().hex}/"}


@pytest.fixture
async def server(tmp_path: Path, datastore_settings: dict[str, Any]) -> AsyncIterator[EpsyncServer]:
    instance = EpsyncServer(server_config(tmp_path / "data", **datastore_settings))
    await instance.start()
    yield instance
    await instance.stop(grace=0.1)


@pytest.fixture
async def client(server: EpsyncServer) -> AsyncIterator[Client]:
    async with Client(f"127.0.0.1:{server.port}", timeout=10) as connected:
        yield connected


def free_port() -> int:
    """A port that was free a moment ago. Racy: another process may take it before it is used. A server should
    listen on port 0 and report the port it bound (see `serve_process`); this is for what cannot, such as an
    address a client must find closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def epsync_command(*args: str) -> list[str]:
    """The CLI as a user runs it, from this venv."""
    return [sys.executable, "-m", "epsync", *args]


async def run_command(
    *argv: str, stdin: bytes | None = None, limit_seconds: float = 60, env: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=None if env is None else {**os.environ, **env},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), limit_seconds)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def grpcurl_binary() -> str:
    return _tool("grpcurl")


def ghz_binary() -> str:
    return _tool("ghz")


def _tool(name: str) -> str:
    """A pinned Go tool: `.tools/bin/<name>` (what `make tools` installs), else PATH."""
    candidate = REPO / ".tools" / "bin" / name
    if candidate.exists():
        return str(candidate)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / name
        if path.exists():
            return str(path)
    raise RuntimeError(f"{name} is not installed: run `make tools` (make test does)")


@dataclass
class ServerProcess:
    """`epsync serve` running as a subprocess; `log` collects its stderr as it is written."""

    process: asyncio.subprocess.Process
    port: int
    log: list[str]


SERVING = re.compile(r"epsync serving on \S*:(\d+)")


@contextlib.asynccontextmanager
async def serve_process(*args: str, within: float = 30) -> AsyncIterator[ServerProcess]:
    """`epsync serve --listen 127.0.0.1:0 *args` as a user runs it, yielded once it serves, with its bound port.

    Ready means the server has logged that it serves, with the address it bound (it does so once it listens),
    so there is no polling; the port is the OS's choice, so nothing can take it between choosing and binding.
    On exit the server gets SIGTERM (and SIGKILL if it does not stop), unless the test already ended it.
    """
    process = await asyncio.create_subprocess_exec(
        *epsync_command("serve", "--listen", "127.0.0.1:0", *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr
    log: list[str] = []
    drain: asyncio.Task[None] | None = None
    try:
        match = None
        async with asyncio.timeout(within):
            while match is None:
                line = await stderr.readline()
                if not line:
                    raise RuntimeError(f"epsync exited with {await process.wait()} before serving:\n{''.join(log)}")
                log.append(line.decode())
                match = SERVING.search(log[-1])
        running = ServerProcess(process, int(match.group(1)), log)
        assert running.port != 0, "the server logged the port it was given, not the one it bound"

        async def keep_reading() -> None:  # so that a full pipe never blocks the server's logging
            async for line in stderr:
                log.append(line.decode())

        drain = asyncio.create_task(keep_reading())
        yield running
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            await drain
