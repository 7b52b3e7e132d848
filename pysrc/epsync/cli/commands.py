"""The client commands of `epsync`: manage endpoints and profiles as calicoctl does.

They speak only the public API (`epsync.client`); each failure is raised for the entry point
(`epsync.main`) to print in one line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from epsync.cli.manifest import dump_manifests, load_manifests
from epsync.cli.output import print_event
from epsync.client import DEFAULT_TARGET, Client, ClientTls
from epsync.client.view import MaterializedView
from epsync.errors import UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Resource = WorkloadEndpoint | Profile

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


def _client(args: argparse.Namespace) -> Client:
    """The client the command's flags describe: TLS when a CA or a client certificate is given."""
    if args.ca_file is None and args.cert_file is None and args.key_file is None:
        return Client(args.server)
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    for path in (args.ca_file, args.cert_file, args.key_file):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    return Client(args.server, tls=ClientTls(args.ca_file, args.cert_file, args.key_file))


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add apply, create, get, list, watch and delete to the `epsync` command's subcommands."""

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument(
            "--server",
            default=os.environ.get("EPSYNC_SERVER", DEFAULT_TARGET),
            help="server address (default $EPSYNC_SERVER or %(default)s)",
        )
        for flag, env, what in (
            ("--ca-file", "EPSYNC_CA_FILE", "connect with TLS: the CA bundle the server's certificate chains to"),
            ("--cert-file", "EPSYNC_CERT_FILE", "mutual TLS: this client's certificate (its identity)"),
            ("--key-file", "EPSYNC_KEY_FILE", "mutual TLS: the certificate's key"),
        ):
            sub.add_argument(flag, type=Path, default=os.environ.get(env) or None, help=f"{what} (default ${env})")
        return sub

    for name, help_text, func in (
        ("apply", "create or replace the resources in a file", _apply),
        ("create", "create the resources in a file", _create),
    ):
        sub = client_command(name, help_text)
        sub.add_argument("-f", "--filename", required=True, help="YAML or JSON file, '-' for stdin")
        sub.set_defaults(func=func)

    get = client_command("get", "show one resource")
    get.add_argument("kind", help="workloadendpoint (wep) or profile")
    get.add_argument("name")
    get.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    get.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    get.set_defaults(func=_get)

    listing = client_command("list", "list resources")
    listing.add_argument("kind", help="workloadendpoints (weps) or profiles")
    scope = listing.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    listing.add_argument("--node", default="", help="only endpoints on this node")
    listing.add_argument("-l", "--selector", default="", help="Calico selector over effective labels")
    listing.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    listing.set_defaults(func=_list)

    watch = client_command("watch", "print the matching resources, then every change to them, as it happens")
    watch.add_argument("kind", help="workloadendpoints (weps) or profiles")
    watch_scope = watch.add_mutually_exclusive_group()
    watch_scope.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    watch_scope.add_argument("-A", "--all-namespaces", action="store_true")
    watch.add_argument("--node", default="", help="only endpoints on this node")
    watch.add_argument("-l", "--selector", default="", help="Calico selector over effective labels")
    watch.add_argument("-o", "--output", choices=["table", "yaml", "json"], default="table")
    watch.add_argument("--limit", type=int, default=0, help="exit after this many object events (0: run until ^C)")
    watch.set_defaults(func=_watch)

    status = client_command("status", "show the server's state: datastore, revisions, watchers, limits")
    status.add_argument("--top", type=int, default=10, help="watcher groups to list, the largest first")
    status.add_argument("-o", "--output", choices=["text", "json"], default="text")
    status.set_defaults(func=_status)

    delete = client_command("delete", "delete resources, named or from a file")
    delete.add_argument("kind", nargs="?", help="workloadendpoint (wep) or profile")
    delete.add_argument("name", nargs="?")
    delete.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    delete.add_argument("-f", "--filename", help="delete the resources in this file")
    delete.add_argument("--resource-version", type=int, default=0, help="only if still at this resource version")
    delete.add_argument("--ignore-missing", action="store_true", help="succeed if it does not exist")
    delete.set_defaults(func=_delete)


def _kind(text: str | None) -> str:
    if text is None or text.lower() not in KIND_ALIASES:
        raise UsageError(f"unknown kind {text!r}; use workloadendpoint (wep) or profile")
    return KIND_ALIASES[text.lower()]


def _read_manifests(filename: str) -> list[Resource]:
    if filename == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(filename).read_text()
        except OSError as error:
            raise UsageError(f"cannot read {filename}: {error.strerror}") from None
    objects = load_manifests(text)
    if not objects:
        raise UsageError(f"{filename} holds no resources")
    return objects


def _describe(obj: Resource) -> str:
    if isinstance(obj, WorkloadEndpoint):
        return f"workloadendpoint {obj.metadata.namespace or DEFAULT_NAMESPACE}/{obj.metadata.name}"
    return f"profile {obj.metadata.name}"


def _apply(args: argparse.Namespace) -> int:
    return _write_each(args, "applied")


def _create(args: argparse.Namespace) -> int:
    return _write_each(args, "created")


def _write_each(args: argparse.Namespace, verb: str) -> int:
    objects = _read_manifests(args.filename)

    async def run() -> None:
        async with _client(args) as client:
            for obj in objects:
                stored = await (client.apply(obj) if verb == "applied" else client.create(obj))
                print(f"{_describe(stored)} {verb} (resource version {stored.metadata.resource_version})")

    asyncio.run(run())
    return 0


def _get(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)

    async def run() -> Resource:
        async with _client(args) as client:
            if kind == "workloadendpoint":
                return await client.get_endpoint(args.name, args.namespace)
            return await client.get_profile(args.name)

    _print([asyncio.run(run())], args.output, kind)
    return 0


def _list(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    namespace = "" if args.all_namespaces else args.namespace

    async def run() -> list[Resource]:
        async with _client(args) as client:
            if kind == "workloadendpoint":
                return [
                    e async for e in client.list_endpoints(namespace=namespace, node=args.node, selector=args.selector)
                ]
            if args.node:
                raise UsageError("--node applies to workload endpoints only")
            return [p async for p in client.list_profiles(selector=args.selector)]

    _print(asyncio.run(run()), args.output, kind, many=True)
    return 0


def _watch(args: argparse.Namespace) -> int:
    kind = _kind(args.kind)
    namespace = "" if args.all_namespaces else args.namespace
    if kind != "workloadendpoint" and (args.node or args.all_namespaces):
        raise UsageError("--node and -A apply to workload endpoints only")

    # The view says on stderr when its stream ends or cannot start, and that it is retrying: a watch
    # against a wrong address or a server that died must not look like a quiet, healthy one.
    logging.basicConfig(level=logging.WARNING, format="epsync: %(message)s", stream=sys.stderr)

    async def run() -> None:
        async with _client(args) as client:
            view: MaterializedView[Any, Any] = (
                client.watch(namespace=namespace, node=args.node, selector=args.selector)
                if kind == "workloadendpoint"
                else client.watch_profiles(selector=args.selector)
            )
            seen = 0
            async for event in view:
                print_event(event, args.output)
                if event.object is not None and event.type != "BOOKMARK":
                    seen += 1
                    if seen == args.limit:
                        return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def _status(args: argparse.Namespace) -> int:
    async def run() -> Any:
        async with _client(args) as client:
            return await client.get_status(top_groups=args.top)

    status = asyncio.run(run())
    if args.output == "json":
        print(json_format.MessageToJson(status, always_print_fields_with_no_presence=True))
        return 0
    lines = [
        f"datastore:   {'healthy' if status.datastore_healthy else 'UNAVAILABLE: writes fail'}"
        + ("; shutting down" if status.shutting_down else ""),
        f"store:       {status.store_id}",
        f"revision:    {status.revision} (history from {status.oldest_replayable_revision})",
        f"cached:      {status.endpoints} endpoints, {status.profiles} profiles",
        f"watchers:    {status.watchers}",
    ]
    lines += [f"  {g.watchers:>6}  {g.kind}: {g.filter}" for g in status.top_groups]
    cut = ", ".join(f"{reason} {count}" for reason, count in sorted(status.cutoffs.items())) or "none"
    lines.append(f"cut off:     {cut}")
    groups = ", ".join(f"{kind} {mean:.1f}" for kind, mean in sorted(status.mean_commit_group_size.items()))
    lines.append(f"per commit:  {groups} writes on average")
    lines.append("limits:      " + ", ".join(f"{k} {v}" for k, v in sorted(status.limits.items())))
    if status.undecodable:
        lines.append(f"skipped:     {len(status.undecodable)} stored values that do not decode:")
        lines += [f"  {key}: {why}" for key, why in sorted(status.undecodable.items())]
    print("\n".join(lines))
    return 0


def _delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind or args.name:
            raise UsageError("give either -f FILE or KIND NAME, not both")
        targets = [
            (
                "workloadendpoint" if isinstance(o, WorkloadEndpoint) else "profile",
                o.metadata.name,
                o.metadata.namespace,
            )
            for o in _read_manifests(args.filename)
        ]
    else:
        if not args.name:
            raise UsageError("delete needs KIND NAME or -f FILE")
        targets = [(_kind(args.kind), args.name, args.namespace)]

    async def run() -> None:
        async with _client(args) as client:
            for kind, name, namespace in targets:
                options = {"resource_version": args.resource_version, "allow_missing": args.ignore_missing}
                if kind == "workloadendpoint":
                    ns = namespace or DEFAULT_NAMESPACE
                    endpoint_deleted = await client.delete_endpoint(name, ns, **options)
                    existed, revision = (
                        endpoint_deleted.HasField("workload_endpoint"),
                        endpoint_deleted.resource_version,
                    )
                    what = f"workloadendpoint {ns}/{name}"
                else:
                    profile_deleted = await client.delete_profile(name, **options)
                    existed, revision = profile_deleted.HasField("profile"), profile_deleted.resource_version
                    what = f"profile {name}"
                if existed:
                    print(f"{what} deleted (revision {revision})")
                else:  # --ignore-missing, and there was nothing: say so, never "deleted"
                    print(f"{what} not found: nothing deleted (--ignore-missing)")

    asyncio.run(run())
    return 0


def _print(objects: Sequence[Resource], output: str, kind: str, *, many: bool = False) -> None:
    if output == "json":
        list_kind = ("WorkloadEndpoint" if kind == "workloadendpoint" else "Profile") if many else None
        sys.stdout.write(dump_manifests(objects, "json", list_kind=list_kind))
        return
    if output == "yaml":
        if objects or not many:
            sys.stdout.write(dump_manifests(objects, "yaml"))
        return
    rows = [_row(obj) for obj in objects]
    header = (
        ("NAMESPACE", "NAME", "NODE", "NETWORKS", "INTERFACE", "VERSION")
        if kind == "workloadendpoint"
        else ("NAME", "LABELS-TO-APPLY", "VERSION")
    )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for line in (header, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def _row(obj: Resource) -> tuple[str, ...]:
    version = str(obj.metadata.resource_version)
    if isinstance(obj, WorkloadEndpoint):
        return (
            obj.metadata.namespace,
            obj.metadata.name,
            obj.spec.node,
            ",".join(obj.spec.ip_networks),
            obj.spec.interface_name,
            version,
        )
    labels = ",".join(f"{k}={v}" for k, v in sorted(obj.spec.labels_to_apply.items()))
    return (obj.metadata.name, labels, version)
