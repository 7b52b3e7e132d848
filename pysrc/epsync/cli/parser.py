"""The client commands' flags: argparse only, so that building the parser (and `--help`) imports nothing heavy.

Each command names the function that runs it as "module:function" (`run`); `epsync.main` imports that
module only when the command is chosen, so the gRPC stack, protobuf and pydantic load only for the
commands that talk to a server.

The connection options (`--server` and the TLS files) are global: they are accepted before the command
(`epsync --server h:p get weps`) and after it (`epsync get weps --server h:p`), as kubectl's are. The
root parser holds their defaults; each command's copy defaults to "not given" (SUPPRESS), so a value given
before the command is not overwritten by the command's default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# The server the commands talk to unless told otherwise; equal to `epsync.client.DEFAULT_TARGET` (a test
# checks it), repeated here because importing the client would import gRPC for `--help`.
DEFAULT_SERVER = "127.0.0.1:50051"

KIND_ALIASES = {
    "workloadendpoint": "workloadendpoint",
    "workloadendpoints": "workloadendpoint",
    "wep": "workloadendpoint",
    "weps": "workloadendpoint",
    "profile": "profile",
    "profiles": "profile",
    "pro": "profile",
    "pros": "profile",
}
LIST_OUTPUTS = ["table", "wide", "name", "yaml", "json"]
SUBCOMMANDS = argparse._SubParsersAction

_CONNECTION_OPTIONS = (
    ("--server", "EPSYNC_SERVER", "server address, or several comma-separated (replicas)"),
    ("--ca-file", "EPSYNC_CA_FILE", "connect with TLS: the CA bundle the server's certificate chains to"),
    ("--cert-file", "EPSYNC_CERT_FILE", "mutual TLS: this client's certificate (its identity)"),
    ("--key-file", "EPSYNC_KEY_FILE", "mutual TLS: the certificate's key"),
)


def add_connection_options(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """--server and the TLS files: with their defaults on the root parser, as "not given" on a command."""
    group = parser.add_argument_group("connection (before or after the command)")
    for flag, env, what in _CONNECTION_OPTIONS:
        if flag == "--server":
            default: object = os.environ.get(env) or DEFAULT_SERVER
            kind: type = str
        else:
            default = Path(os.environ[env]) if os.environ.get(env) else None
            kind = Path
        group.add_argument(
            flag,
            type=kind,
            default=default if root else argparse.SUPPRESS,
            metavar="ADDRESS" if flag == "--server" else "FILE",
            help=f"{what} (default ${env}" + (f" or {DEFAULT_SERVER})" if flag == "--server" else ")"),
        )


def add_commands(commands: SUBCOMMANDS[argparse.ArgumentParser]) -> None:
    """Add the client commands (everything but `serve`) to the `epsync` command's subcommands."""

    def command(name: str, help_text: str, run: str, *, connects: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if connects:
            add_connection_options(sub, root=False)
        sub.set_defaults(run=run)
        return sub

    def files(sub: argparse.ArgumentParser, *, required: bool) -> None:
        sub.add_argument(
            "-f",
            "--filename",
            action="append",
            required=required,
            metavar="FILE",
            help="YAML or JSON file, a directory (its .yaml, .yml and .json files, by name), or '-' for stdin; "
            "may be repeated",
        )

    def kind(sub: argparse.ArgumentParser, *, names: str) -> None:
        sub.add_argument("kind", metavar="KIND", help="workloadendpoint (wep) or profile, or KIND/[NAMESPACE/]NAME")
        sub.add_argument("names", metavar="NAME", nargs=names, help="resource names")
        sub.add_argument("-n", "--namespace", help="the endpoints' namespace (default: default)")

    def selection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-A", "--all-namespaces", action="store_true", help="endpoints of every namespace")
        sub.add_argument("--node", default="", help="only endpoints on this node")
        sub.add_argument("-l", "--selector", default="", help="Calico selector over effective labels")

    for name, help_text in (
        ("apply", "create the resources in files, or replace them; a resourceVersion in the file is a precondition"),
        ("create", "create the resources in files; one that exists is an error"),
        ("replace", "replace the resources in files; one that does not exist is an error"),
    ):
        sub = command(name, help_text, "epsync.cli.writes:run_" + name)
        files(sub, required=True)
        if name != "create":
            sub.add_argument(
                "--force", action="store_true", help="ignore the files' resourceVersion: overwrite whatever is stored"
            )

    get = command("get", "show resources: the named ones, or list them all (kubectl style)", "epsync.cli.reads:run_get")
    kind(get, names="*")
    selection(get)
    get.add_argument("-o", "--output", choices=LIST_OUTPUTS, default="table")

    listing = command("list", "list resources (the same as get without names)", "epsync.cli.reads:run_get")
    listing.add_argument("kind", metavar="KIND", help="workloadendpoints (weps) or profiles")
    listing.set_defaults(names=[])
    listing.add_argument("-n", "--namespace", help="the endpoints' namespace (default: default)")
    selection(listing)
    listing.add_argument("-o", "--output", choices=LIST_OUTPUTS, default="table")

    watch = command(
        "watch", "print the matching resources, then every change to them, as it happens", "epsync.cli.watching:run"
    )
    watch.add_argument("kind", metavar="KIND", help="workloadendpoints (weps) or profiles")
    watch.add_argument("-n", "--namespace", help="the endpoints' namespace (default: default)")
    selection(watch)
    watch.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    watch.add_argument("--limit", type=int, default=0, help="exit after this many object events (0: run until ^C)")
    watch.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up (exit 1) if the server cannot be reached within this time at the start (default %(default)s)",
    )

    patch = command(
        "patch", "change fields of one resource with a JSON merge patch (RFC 7386)", "epsync.cli.edits:run_patch"
    )
    kind(patch, names="?")
    patch.add_argument(
        "-p", "--patch", required=True, help='the merge patch, a JSON (or YAML) object, e.g. \'{"spec":{"node":"n2"}}\''
    )

    label = command(
        "label", "add, change or remove labels of one resource (key=value, key-)", "epsync.cli.edits:run_label"
    )
    label.add_argument("kind", metavar="KIND", help="workloadendpoint (wep) or profile, or KIND/[NAMESPACE/]NAME")
    label.add_argument("changes", metavar="NAME|KEY=VALUE|KEY-", nargs="+", help="the name, then label changes")
    label.add_argument("-n", "--namespace", help="the endpoint's namespace (default: default)")
    label.add_argument("--overwrite", action="store_true", help="allow changing the value of an existing label")

    delete = command("delete", "delete resources, named or from files", "epsync.cli.writes:run_delete")
    delete.add_argument("kind", metavar="KIND", nargs="?", help="workloadendpoint (wep) or profile")
    delete.add_argument("names", metavar="NAME", nargs="*", help="resource names")
    delete.add_argument("-n", "--namespace", help="the endpoints' namespace (default: default)")
    files(delete, required=False)
    delete.add_argument("--resource-version", type=int, default=0, help="only if still at this resource version")
    delete.add_argument(
        "--ignore-missing", action="store_true", help="a resource that does not exist is not an error (exit 0)"
    )

    status = command(
        "status", "show the server's state: datastore, revisions, watchers, limits", "epsync.cli.reads:run_status"
    )
    status.add_argument("--top", type=int, default=10, help="watcher groups to list, the largest first")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")

    completion = command(
        "completion",
        "print a shell completion script: `source <(epsync completion bash)`",
        "epsync.cli.completion:run",
        connects=False,
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
