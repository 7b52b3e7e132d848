"""A full disk, for real: the embedded store on a 1 MiB tmpfs.

Writes fail with RESOURCE_EXHAUSTED saying the disk is full and change nothing; health turns
NOT_SERVING while commits fail; reads and watches go on; once there is space, writes work and
health is SERVING again. Mounting a tmpfs needs root (CAP_SYS_ADMIN): elsewhere the test is
skipped, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from epsync.client import Client
from epsync.errors import NotFound, ResourceExhausted
from epsync.server.app import EpsyncServer
from tests.conftest import server_config
from tests.factories import endpoint


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    mount_point = Path(tempfile.mkdtemp(prefix="epsync-tiny-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


async def health_of(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(response.status)


@pytest.mark.sqlite_only
async def test_a_full_disk_fails_writes_clearly_and_they_work_again_once_there_is_space(tiny_disk: Path) -> None:
    server = EpsyncServer(server_config(tiny_disk / "data", metrics_listen="127.0.0.1:0"))
    await server.start()
    assert server.metrics is not None
    readyz = f"http://127.0.0.1:{server.metrics.port}/readyz"
    try:
        assert await asyncio.to_thread(_status_of, readyz) == 200
        async with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
            kept = await client.create_endpoint(endpoint("kept"))
            ballast = tiny_disk / "ballast"
            with contextlib.suppress(OSError), ballast.open("wb") as filling:  # fill the disk to the last byte
                while True:
                    filling.write(b"\0" * 4096)
                    filling.flush()
            refused: ResourceExhausted | None = None
            for i in range(200):  # the WAL may have room for a few first
                try:
                    await client.create_endpoint(endpoint(f"more-{i}", labels={"pad": "x" * 60}))
                except ResourceExhausted as error:
                    refused = error
                    break
            assert refused is not None, "200 writes went through on a full disk"
            assert "disk is full" in refused.message
            assert refused.reason == "DATASTORE_FULL"
            assert await health_of(server.port) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await asyncio.to_thread(_status_of, readyz) == 503  # /readyz says the same
            assert await client.get_endpoint("kept") == kept  # reads go on
            with pytest.raises(NotFound):  # the refused write changed nothing
                await client.get_endpoint(f"more-{i}")

            ballast.unlink()
            again = await client.create_endpoint(endpoint("after"))
            assert again.metadata.resource_version > kept.metadata.resource_version
            async with asyncio.timeout(5):
                while await health_of(server.port) != health_pb2.HealthCheckResponse.SERVING:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert await asyncio.to_thread(_status_of, readyz) == 200
    finally:
        await server.stop(0)
