"""An acknowledged write survives `kill -9` of the server, and revisions carry on after it."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from epsync.client import Client
from epsync.errors import Unavailable
from tests.conftest import epsync_command, free_port
from tests.factories import endpoint


async def start_server(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *epsync_command("serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with Client(f"127.0.0.1:{port}", timeout=1) as client:
        for _ in range(200):
            try:
                await client.delete_endpoint("probe", allow_missing=True)
                return process
            except Unavailable:
                await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not come up")


async def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    port = free_port()
    server = await start_server(tmp_path / "data", port)
    try:
        async with Client(f"127.0.0.1:{port}") as client:
            burst = await asyncio.gather(*(client.create_endpoint(endpoint(f"burst-{i}")) for i in range(50)))
            acknowledged = await client.create_endpoint(endpoint("survivor", labels={"gen": "1"}))
            server.send_signal(signal.SIGKILL)  # no graceful anything: straight after the acknowledgement
        await server.wait()

        server = await start_server(tmp_path / "data", port)
        async with Client(f"127.0.0.1:{port}") as client:
            recovered = await client.get_endpoint("survivor")
            assert recovered == acknowledged
            for written in burst:
                assert await client.get_endpoint(written.metadata.name) == written
            following = await client.create_endpoint(endpoint("next"))
            assert following.metadata.resource_version > acknowledged.metadata.resource_version
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            await server.wait()
