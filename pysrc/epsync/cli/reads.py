"""`get` (named resources, or a listing as kubectl's `get` without a name), `list`, and `status`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from google.protobuf import json_format

from epsync.cli.connect import Resource, client_of, named_resources, resolve_kind
from epsync.cli.output import print_resources
from epsync.errors import UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint


def run_get(args: argparse.Namespace) -> int:
    if args.names or "/" in args.kind:
        return _get_named(args)
    kind = resolve_kind(args.kind)
    if args.all_namespaces and args.namespace is not None:
        raise UsageError("give -n NAMESPACE or -A, not both")
    if kind == "profile" and args.node:
        raise UsageError("--node applies to workload endpoints only")
    # Profiles have no namespace: -n and -A are accepted and change nothing (as kubectl does for nodes).
    namespace = "" if args.all_namespaces else args.namespace or DEFAULT_NAMESPACE

    async def fetch() -> list[Resource]:
        async with client_of(args) as client:
            if kind == "workloadendpoint":
                return [
                    e async for e in client.list_endpoints(namespace=namespace, node=args.node, selector=args.selector)
                ]
            return [p async for p in client.list_profiles(selector=args.selector)]

    objects = asyncio.run(fetch())
    if not objects and args.output in ("table", "wide"):
        where = "" if kind == "profile" or not namespace else f" in namespace {namespace}"
        print(f"No {kind}s found{where}.", file=sys.stderr)
        return 0
    print_resources(objects, args.output, kind, listing=True)
    return 0


def _get_named(args: argparse.Namespace) -> int:
    if args.all_namespaces or args.node or args.selector:
        raise UsageError("-A, --node and -l select a listing; they do not go with names")
    keys = named_resources(args.kind, args.names, args.namespace)
    kinds = {"workloadendpoint" if isinstance(key, WorkloadEndpoint) else "profile" for key in keys}
    if len(kinds) > 1:
        raise UsageError("name resources of one kind at a time")

    async def fetch() -> list[Resource]:
        async with client_of(args) as client:
            found: list[Resource] = []
            for key in keys:
                if isinstance(key, WorkloadEndpoint):
                    found.append(await client.get_endpoint(key.metadata.name, key.metadata.namespace))
                else:
                    found.append(await client.get_profile(key.metadata.name))
            return found

    print_resources(asyncio.run(fetch()), args.output, kinds.pop(), listing=False)
    return 0


def run_status(args: argparse.Namespace) -> int:
    async def fetch() -> Any:
        async with client_of(args) as client:
            return await client.get_status(top_groups=args.top)

    status = asyncio.run(fetch())
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
