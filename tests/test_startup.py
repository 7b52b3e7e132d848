"""A server that cannot start says why in one line and exits non-zero: no traceback at an operator."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import epsync_command, run_command, serve_process


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
