"""The installed `epsync` command, run as a shell runs it: pipes, completion, startup, concurrent users."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from epsync.client import Client
from epsync.server.app import EpsyncServer
from tests.conftest import run_command
from tests.factories import profile

EPSYNC = str(Path(sys.executable).parent / "epsync")  # the console script pip installed in this venv


def address(server: EpsyncServer) -> str:
    return f"127.0.0.1:{server.port}"


async def test_the_installed_command_applies_and_lists(server: EpsyncServer) -> None:
    manifest = b"apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {name: web}\n"
    code, out, err = await run_command(EPSYNC, "apply", "-f", "-", "--server", address(server), stdin=manifest)
    assert code == 0, err
    assert out.startswith("profile web applied (resource version ")
    code, out, err = await run_command(EPSYNC, "--server", address(server), "get", "profiles", "-o", "name")
    assert (code, out, err) == (0, "profile/web\n", "")


async def closed_pipe_run(*argv: str) -> tuple[int | None, bytes]:
    """`epsync ARGV | head -0`: stdout is a pipe whose reader has gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = await asyncio.create_subprocess_exec(EPSYNC, *argv, stdout=write_end, stderr=asyncio.subprocess.PIPE)
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, err


async def test_a_reader_that_goes_away_ends_list_and_watch_quietly(server: EpsyncServer) -> None:
    async with Client(address(server)) as client:
        for i in range(3):
            await client.create_profile(profile(f"p{i}"))
    for command in ("get", "watch"):
        code, err = await closed_pipe_run(command, "profiles", "--server", address(server))
        assert code == 128 + signal.SIGPIPE, (command, err)
        assert b"Traceback" not in err, err.decode()
        assert b"Exception ignored" not in err, err.decode()


async def test_concurrent_label_changes_are_never_lost(server: EpsyncServer) -> None:
    """Each `label` writes under the version it read and re-reads once on a conflict: whatever succeeded is kept."""
    async with Client(address(server)) as client:
        await client.create_profile(profile("shared"))
    results = await asyncio.gather(
        *(run_command(EPSYNC, "label", "profile", "shared", f"k{i}=v", "--server", address(server)) for i in range(6))
    )
    async with Client(address(server)) as client:
        labels = dict((await client.get_profile("shared")).metadata.labels)
    for i, (code, _, err) in enumerate(results):
        if code == 0:
            assert labels.get(f"k{i}") == "v", (i, err, labels)
        else:
            assert err.startswith("epsync: error: profile shared: conflict"), err
    assert any(code == 0 for code, _, _ in results)


def test_bash_completion_completes_commands_kinds_options_and_names(tmp_path: Path) -> None:
    script = subprocess.run([EPSYNC, "completion", "bash"], capture_output=True, text=True, check=True).stdout
    (tmp_path / "epsync.bash").write_text(script)
    probe = f"""
source {tmp_path / "epsync.bash"}
complete_line() {{
    COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMPREPLY=(); _epsync; echo "${{COMPREPLY[*]}}"
}}
complete_line epsync la
complete_line epsync get ""
complete_line epsync --server x get wep -o ""
complete_line epsync watch --connect-t
complete_line epsync serve --datastore ""
"""
    lines = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0] == "label"
    assert "wep" in lines[1].split()
    assert "profiles" in lines[1].split()
    assert lines[2].split() == ["table", "wide", "name", "yaml", "json"]
    assert lines[3] == "--connect-timeout"
    assert lines[4].split() == ["sqlite", "etcd"]
    zsh = subprocess.run([EPSYNC, "completion", "zsh"], capture_output=True, text=True, check=True).stdout
    assert zsh.startswith("#compdef epsync\nautoload -U +X bashcompinit && bashcompinit\n")


async def test_bash_completion_asks_the_server_for_names(server: EpsyncServer, tmp_path: Path) -> None:
    async with Client(address(server)) as client:
        await client.create_profile(profile("web-a"))
        await client.create_profile(profile("web-b"))
    code, script, _ = await run_command(EPSYNC, "completion", "bash")
    (tmp_path / "epsync.bash").write_text(script)
    probe = (
        f"source {tmp_path / 'epsync.bash'}; COMP_WORDS=(epsync --server {address(server)} delete profile web-);"
        " COMP_CWORD=5; _epsync; echo ${COMPREPLY[*]}"
    )
    code, out, err = await run_command("bash", "-c", probe, env={"PATH": f"{Path(EPSYNC).parent}:{os.environ['PATH']}"})
    assert (code, out.split()) == (0, ["web-a", "web-b"]), err


def test_help_imports_neither_grpc_nor_protobuf_nor_the_server() -> None:
    probe = (
        "import sys\n"
        "from epsync.main import run\n"
        "try:\n    run(['get', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('grpc', 'google.protobuf', 'pydantic', 'yaml', 'asyncio', 'epsync.server.app',"
        " 'epsync.client') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stderr.strip() == "[]"


def test_the_default_server_address_is_the_clients() -> None:
    from epsync.cli.parser import DEFAULT_SERVER
    from epsync.client import DEFAULT_TARGET

    assert DEFAULT_SERVER == DEFAULT_TARGET
