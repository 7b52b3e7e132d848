"""An acknowledged write survives `kill -9` of the server, and revisions carry on after it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from epsync.client import Client
from tests.conftest import serve_process
from tests.factories import endpoint


async def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    async with serve_process("--data-dir", data_dir) as server:
        async with Client(f"127.0.0.1:{server.port}") as client:
            burst = await asyncio.gather(*(client.create_endpoint(endpoint(f"burst-{i}")) for i in range(50)))
            acknowledged = await client.create_endpoint(endpoint("survivor", labels={"gen": "1"}))
            server.process.send_signal(signal.SIGKILL)  # no graceful anything: straight after the acknowledgement
        assert await server.process.wait() == -signal.SIGKILL

    async with serve_process("--data-dir", data_dir) as server, Client(f"127.0.0.1:{server.port}") as client:
        recovered = await client.get_endpoint("survivor")
        assert recovered == acknowledged
        for written in burst:
            assert await client.get_endpoint(written.metadata.name) == written
        following = await client.create_endpoint(endpoint("next"))
        assert following.metadata.resource_version > acknowledged.metadata.resource_version
