"""Shared fixtures: a real epsync server on a free loopback port, on each datastore.

Every test that takes `server` (or `datastore_settings`) runs twice: on the embedded SQLite store
in a temporary directory, and on a real etcd (one per test session, a fresh key prefix per test).
A test about one backend's nature is marked `@pytest.mark.sqlite_only`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test is about the embedded store; not run on etcd")


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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def epsync_command(*args: str) -> list[str]:
    """The CLI as a user runs it, from this venv."""
    return [sys.executable, "-m", "epsync", *args]


async def run_command(*argv: str, stdin: bytes | None = None, limit_seconds: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin), limit_seconds)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def grpcurl_binary() -> str:
    candidate = REPO / ".tools" / "bin" / "grpcurl"
    if candidate.exists():
        return str(candidate)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / "grpcurl"
        if path.exists():
            return str(path)
    raise RuntimeError("grpcurl is not installed: run `make tools` (make test does)")
