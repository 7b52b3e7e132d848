"""`patch` and `label`: read one resource, change part of it, write it back under a precondition.

The write carries the resource_version that was read, so a change someone else made in between is
never overwritten: the server refuses it (ABORTED), and the command reads again and re-applies its
change once; a second conflict is reported rather than retried forever. A patch that sets
`metadata.resourceVersion` itself makes that version the precondition, and is not retried.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from epsync.cli.connect import Resource, client_of, copy_of, named_resources
from epsync.cli.files import describe
from epsync.cli.manifest import ManifestError, from_manifest_dict, parse_value, to_manifest_dict
from epsync.cli.merge_patch import merge_patch
from epsync.client import Client
from epsync.errors import Aborted, UsageError
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

# Returns the changed resource (with the precondition to write under), or None when nothing changes.
Change = Callable[[Resource], Resource | None]


def run_patch(args: argparse.Namespace) -> int:
    names = [args.names] if args.names else []
    (key,) = _one(args.kind, names, args.namespace)
    try:
        patch = parse_value(args.patch)
    except ManifestError as error:
        raise UsageError(f"--patch: {error}") from None
    if not isinstance(patch, dict):
        raise UsageError('--patch: a merge patch is an object, such as \'{"spec": {"node": "n2"}}\'')
    pinned = isinstance(patch.get("metadata"), dict) and patch["metadata"].get("resourceVersion") is not None

    def change(current: Resource) -> Resource | None:
        before = to_manifest_dict(current)
        after = merge_patch(before, patch)
        for field in ("apiVersion", "kind"):
            if after.get(field) != before[field]:
                raise UsageError(f"the patch may not change {field}")
        for field in ("name", "namespace"):
            if _meta(after).get(field) != before["metadata"].get(field):
                raise UsageError(f"the patch may not change metadata.{field}: that is another resource")
        if after == before:
            return None
        try:
            changed = from_manifest_dict(after)
        except ManifestError as error:
            raise UsageError(f"the patched resource: {error}") from None
        if not pinned:
            changed.metadata.resource_version = current.metadata.resource_version
        return changed

    stored, changed = asyncio.run(_read_change_write(args, key, change, retry=not pinned))
    outcome = "patched" if changed else "unchanged"
    print(f"{describe(stored)} {outcome} (resource version {stored.metadata.resource_version})")
    return 0


def _meta(document: Any) -> dict[str, Any]:
    meta = document.get("metadata") if isinstance(document, dict) else None
    return meta if isinstance(meta, dict) else {}


def run_label(args: argparse.Namespace) -> int:
    if "/" in args.kind:
        names, changes = [], args.changes
    else:
        names, changes = args.changes[:1], args.changes[1:]
    (key,) = _one(args.kind, names, args.namespace)
    if not changes:
        raise UsageError("give at least one label change: KEY=VALUE to set, KEY- to remove")
    to_set, to_remove = parse_label_changes(changes)

    def change(current: Resource) -> Resource | None:
        labels = current.metadata.labels
        for label, value in to_set.items():
            if label in labels and labels[label] != value and not args.overwrite:
                raise UsageError(f"label {label!r} already has a value ({labels[label]!r}); --overwrite changes it")
        for label in sorted(to_remove):
            if label not in labels:
                print(f"epsync: label {label!r} not found", file=sys.stderr)
        if all(labels.get(k) == v for k, v in to_set.items()) and not any(k in labels for k in to_remove):
            return None
        changed = copy_of(current)
        for label in to_remove:
            changed.metadata.labels.pop(label, None)
        changed.metadata.labels.update(to_set)
        return changed

    stored, changed = asyncio.run(_read_change_write(args, key, change, retry=True))
    verb = "labeled" if to_set else "unlabeled"
    print(
        f"{describe(stored)} {verb if changed else 'not labeled'} (resource version {stored.metadata.resource_version})"
    )
    return 0


def parse_label_changes(changes: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """kubectl's label arguments: `key=value` sets, `key-` removes; the server checks keys and values."""
    to_set: dict[str, str] = {}
    to_remove: set[str] = set()
    for text in changes:
        if "=" in text:
            label, _, value = text.partition("=")
            if not label:
                raise UsageError(f"{text!r}: a label needs a key before '='")
            if label in to_set and to_set[label] != value:
                raise UsageError(f"label {label!r} is given two values")
            to_set[label] = value
        elif text.endswith("-") and len(text) > 1:
            to_remove.add(text[:-1])
        else:
            raise UsageError(f"{text!r} is not a label change: KEY=VALUE sets a label, KEY- removes it")
    both = to_remove & set(to_set)
    if both:
        raise UsageError(f"label {sorted(both)[0]!r} is both set and removed")
    return to_set, to_remove


def _one(kind: str, names: list[str], namespace: str | None) -> list[Resource]:
    keys = named_resources(kind, names, namespace)
    if len(keys) != 1:
        raise UsageError("name one resource")
    return keys


async def _read_change_write(
    args: argparse.Namespace, key: Resource, change: Change, *, retry: bool
) -> tuple[Resource, bool]:
    """The stored resource after `change`, and whether anything was written. One retry on a conflict."""
    async with client_of(args) as client:
        for attempt in (1, 2):
            current = await _get(client, key)
            changed = change(current)
            if changed is None:
                return current, False
            try:
                return await _write(client, changed), True
            except Aborted as error:
                if not retry:
                    raise UsageError(f"{describe(key)}: conflict: {error.message}") from None
                if attempt == 2:
                    raise UsageError(
                        f"{describe(key)}: conflict: it changed again while this change was applied; try again"
                    ) from None
    raise AssertionError("unreachable")


async def _get(client: Client, key: Resource) -> Resource:
    if isinstance(key, WorkloadEndpoint):
        return await client.get_endpoint(key.metadata.name, key.metadata.namespace)
    return await client.get_profile(key.metadata.name)


async def _write(client: Client, obj: Resource) -> Resource:
    if isinstance(obj, WorkloadEndpoint):
        return await client.update_endpoint(obj)
    return await client.update_profile(obj)
