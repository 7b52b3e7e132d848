"""The `epsync` command: the one place the server (`epsync serve`) and the client commands meet.

Every failure prints one clear line on stderr and exits non-zero; nothing prints a traceback at an
operator (EPSYNC_DEBUG=1 adds the traceback of an unexpected error, for a bug report).

Startup is kept short: building the parser imports only argparse, and the module that runs the chosen
command is imported once it is chosen, so `epsync --help` never loads gRPC, protobuf or the server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from epsync.cli.parser import add_commands, add_connection_options
from epsync.server.command import add_serve_command


def main(argv: Sequence[str] | None = None) -> NoReturn:
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (argparse still exits 2 itself on bad usage)."""
    root = parser()
    args, extra = root.parse_known_args(argv)
    # argparse gives a `NAME*` positional its share before the options that follow it, so the names of
    # `get wep -o yaml NAME` (or the changes of `label wep NAME -n ns k=v`) come back unrecognised: they are
    # the command's, as kubectl takes them.
    trailing = next((n for n in ("names", "changes") if isinstance(getattr(args, n, None), list)), None)
    if trailing is not None:
        getattr(args, trailing).extend(a for a in extra if not a.startswith("-"))
        extra = [a for a in extra if a.startswith("-")]
    if extra:
        root.error(f"unrecognized arguments: {' '.join(extra)}")
    args.root_parser = root  # for `epsync completion`, which describes the whole command
    try:
        code: int = _command(args.run)(args)
        sys.stdout.flush()  # here, where a reader that went away is handled, not at exit
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        _report(error)
        return 1
    return code


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="epsync", description="Datastore sync for Calico WorkloadEndpoints.")
    root.add_argument("--version", action=_Version, help="print the version and exit")
    add_connection_options(root, root=True)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_command(commands)
    add_commands(commands)
    return root


def _command(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, function = spec.partition(":")
    run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
    return run


class _Version(argparse.Action):
    """`--version`: looked up only when asked for (importlib.metadata is not free)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=str(kwargs.get("help")))

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        from importlib.metadata import version

        print(f"epsync {version('epsync')}")
        parser.exit()


def _report(error: Exception) -> None:
    """The one line an error gets; the modules that raise the known kinds are loaded by then."""
    from epsync.errors import EpsyncError, InvalidArgument, UsageError

    manifest = sys.modules.get("epsync.cli.manifest")
    if isinstance(error, UsageError) or (manifest is not None and isinstance(error, manifest.ManifestError)):
        message = str(error)
    elif isinstance(error, InvalidArgument):
        message = "invalid request: " + "; ".join(f"{v.field}: {v.description}" for v in error.violations)
    elif isinstance(error, EpsyncError):
        message = f"{error.code.name}: {error.message}"
    else:
        # A bug, or something no check foresaw: still one line, with a way to get the rest.
        message = f"unexpected {type(error).__name__}: {error} (EPSYNC_DEBUG=1 prints the traceback)"
        if os.environ.get("EPSYNC_DEBUG"):
            import traceback

            traceback.print_exception(error)
    with contextlib.suppress(OSError):  # stderr gone too: the exit status still says it
        print(f"epsync: error: {message}", file=sys.stderr, flush=True)


def _reader_gone() -> int:
    """The reader of stdout went away (`epsync list | head -1`): stop quietly, as a tool killed by SIGPIPE does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
    except (OSError, ValueError):
        pass  # stdout is not a file (a test's capture): nothing will flush it at exit
    return 128 + signal.SIGPIPE
