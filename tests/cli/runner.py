"""Running the real `epsync` entry point in-process, as a user's shell would, with its output captured.

`epsync.main.main` runs in a worker thread: a command calls `asyncio.run`, which cannot run inside the
test's own event loop (where the server under test runs). stdout, stderr and stdin are swapped for the
duration of the call; the exit status is what `main` exits with.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from dataclasses import dataclass

from epsync.main import main
from epsync.server.app import EpsyncServer


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """stderr, which must be exactly one line (and no traceback) for a failed command."""
        assert "Traceback" not in self.err, self.err
        assert self.err.count("\n") == 1, self.err
        assert self.err.startswith("epsync: error: "), self.err
        return self.err.strip()


def run_main(argv: list[str], stdin: bytes = b"") -> Result:
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.stdin = saved_stdin
    return Result(code, out.getvalue(), err.getvalue())


async def epsync(*argv: str, stdin: bytes = b"") -> Result:
    """`epsync ARGV...` in-process, off the event loop."""
    return await asyncio.to_thread(run_main, list(argv), stdin)


async def against(server: EpsyncServer, *argv: str, stdin: bytes = b"") -> Result:
    """`epsync --server <the test server> ARGV...`: the global option before the command, as kubectl allows."""
    return await epsync("--server", f"127.0.0.1:{server.port}", *argv, stdin=stdin)
