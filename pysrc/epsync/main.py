"""The `epsync` command: the one place the server (`epsync serve`) and the client commands meet.

Every failure prints one clear line on stderr and exits non-zero; nothing prints a traceback
at an operator.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from epsync.cli.commands import add_commands
from epsync.cli.manifest import ManifestError
from epsync.errors import EpsyncError, InvalidArgument, UsageError
from epsync.server.command import add_serve_command


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a reader that went away is handled, not at exit
    except (UsageError, ManifestError) as error:
        _fail(str(error))
    except InvalidArgument as error:
        _fail("invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in error.violations))
    except EpsyncError as error:
        _fail(f"{error.code.name}: {error.message}")
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (`epsync list | head -1`): stop quietly, as a tool killed by SIGPIPE does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        code = 128 + signal.SIGPIPE
    sys.exit(code)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="epsync", description="Datastore sync for Calico WorkloadEndpoints.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_commands(commands)
    return root


def _fail(message: str) -> NoReturn:
    print(f"epsync: error: {message}", file=sys.stderr)
    sys.exit(1)
