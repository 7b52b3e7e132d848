"""A server that cannot start says why in one line and exits non-zero: no traceback at an operator."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

from epsync.client import Client
from tests.conftest import epsync_command, run_command, serve_process
from tests.factories import endpoint


def one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert lines[-1].startswith("epsync: error: "), err
    return lines[-1]


async def test_an_address_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run_command(
            *epsync_command(
                "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path), "--log-level", "ERROR"
            )
        )
    line = one_line_error(code, err)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--listen" in line


async def test_a_data_directory_in_use_is_one_line(tmp_path: Path) -> None:
    async with serve_process("--data-dir", str(tmp_path)):
        code, _, err = await run_command(
            *epsync_command("serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), "--log-level", "ERROR")
        )
    assert "in use by another epsync process" in one_line_error(code, err)


async def test_a_data_directory_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = await run_command(
        *epsync_command("serve", "--listen", "127.0.0.1:0", "--data-dir", str(blocker / "data"), "--log-level", "ERROR")
    )
    assert "cannot create data directory" in one_line_error(code, err)


async def test_a_wiped_data_directory_is_refused_when_a_store_is_expected(tmp_path: Path) -> None:
    data = tmp_path / "data"
    serve = ("serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--log-level", "ERROR")
    code, _, err = await run_command(*epsync_command(*serve, "--expect-existing-store"))
    line = one_line_error(code, err)
    assert "does not exist, and it is expected to (--expect-existing-store)" in line
    assert not (data / "epsync.db").exists()  # nothing was made
    async with serve_process("--data-dir", str(data)):  # without the flag: a new store
        pass
    async with serve_process("--data-dir", str(data), "--expect-existing-store"):  # it exists now
        pass


async def test_a_revision_counter_behind_the_stored_objects_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with serve_process("--data-dir", str(data)) as server, Client(f"127.0.0.1:{server.port}") as client:
        await client.create_endpoint(endpoint("a"))
        await client.create_endpoint(endpoint("b"))
    with sqlite3.connect(data / "epsync.db") as db:  # as a partial restore would leave it
        db.execute("UPDATE meta SET value = 1 WHERE name = 'revision'")
    code, _, err = await run_command(
        *epsync_command("serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--log-level", "ERROR")
    )
    line = one_line_error(code, err)
    assert "its revision counter (1) is behind the revisions it stores (up to 2)" in line
