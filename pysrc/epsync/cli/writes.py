"""`apply`, `create`, `replace` and `delete`: the resources of files (or named ones), written one by one.

Every file loads completely before anything is sent, so a bad file changes nothing. The resources are
then written in file order; the first that fails stops the command, and the error says how many were
written, which document failed and which resource it holds, and that the ones after it were not written
("applied 3 of 5; document 4 (workloadendpoint prod/web-eth0): ...; 1 after it not applied").

A `metadata.resourceVersion` in a file is a precondition, as in calicoctl and kubectl: `get -o yaml`,
edit, `apply` cannot overwrite a change someone made in between. `--force` drops it (last writer wins).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence

from epsync.cli.connect import client_of, copy_of, named_resources
from epsync.cli.files import Loaded, describe, endpoint_name, load_files
from epsync.client import Client
from epsync.errors import Aborted, EpsyncError, InvalidArgument, NotFound, UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Resource = WorkloadEndpoint | Profile
Write = Callable[[Client, Resource], Awaitable[Resource]]


def run_apply(args: argparse.Namespace) -> int:
    return _write_files(args, "applied", _apply(force=args.force))


def run_create(args: argparse.Namespace) -> int:
    return _write_files(args, "created", _create)


def run_replace(args: argparse.Namespace) -> int:
    return _write_files(args, "replaced", _replace(force=args.force))


def _apply(*, force: bool) -> Write:
    async def write(client: Client, obj: Resource) -> Resource:
        return await _update(client, _without_version(obj) if force else obj, allow_missing=True)

    return write


def _replace(*, force: bool) -> Write:
    async def write(client: Client, obj: Resource) -> Resource:
        return await _update(client, _without_version(obj) if force else obj, allow_missing=False)

    return write


async def _create(client: Client, obj: Resource) -> Resource:
    return await client.create(obj)


async def _update(client: Client, obj: Resource, *, allow_missing: bool) -> Resource:
    """A full replace; a non-zero resourceVersion must still be the stored one."""
    if isinstance(obj, WorkloadEndpoint):
        return await client.update_endpoint(obj, allow_missing=allow_missing)
    return await client.update_profile(obj, allow_missing=allow_missing)


def _without_version(obj: Resource) -> Resource:
    copy = copy_of(obj)
    copy.metadata.resource_version = 0
    return copy


def _write_files(args: argparse.Namespace, verb: str, write: Write) -> int:
    loaded = load_files(args.filename)

    async def each(client: Client, item: Loaded) -> None:
        stored = await write(client, item.resource)
        print(f"{describe(stored)} {verb} (resource version {stored.metadata.resource_version})", flush=True)

    asyncio.run(_each(args, loaded, each, verb))
    return 0


async def _each(
    args: argparse.Namespace, loaded: Sequence[Loaded], step: Callable[[Client, Loaded], Awaitable[None]], verb: str
) -> None:
    """`step` for every loaded resource in order, stopping at the first failure with a message that places it."""
    several_sources = len({item.source for item in loaded}) > 1
    async with client_of(args) as client:
        for done, item in enumerate(loaded):
            try:
                await step(client, item)
            except (EpsyncError, UsageError) as error:
                raise UsageError(
                    _placed(error, item, done, len(loaded), verb, several_sources=several_sources)
                ) from None


def _placed(error: Exception, item: Loaded, done: int, total: int, verb: str, *, several_sources: bool) -> str:
    """The one line for a write that failed partway: what was done, where it failed, what was not done."""
    where = item.where(several_sources=several_sources)
    what = f"{where} ({describe(item.resource)})" if where else describe(item.resource)
    what += f": {_problem(error, verb)}"
    if total == 1:
        return what
    rest = total - done - 1
    after = f"; the {rest} after it not {verb}" if rest else ""
    return f"{verb} {done} of {total}; {what}{after}"


def _problem(error: Exception, verb: str) -> str:
    if isinstance(error, NotFound) and verb == "deleted":
        return "not found: nothing to delete"
    if isinstance(error, InvalidArgument):
        return "invalid: " + "; ".join(f"{v.field}: {v.description}" for v in error.violations)
    if isinstance(error, Aborted):
        # The usual cause: the file came from `get -o yaml` and someone changed the resource since.
        hint = "; --force overwrites it" if verb != "deleted" else ""
        return f"conflict: {error.message}{hint}"
    if isinstance(error, EpsyncError):
        return f"{error.code.name}: {error.message}"
    return str(error)


# --- delete -------------------------------------------------------------------------------------


def run_delete(args: argparse.Namespace) -> int:
    if args.filename:
        if args.kind or args.names:
            raise UsageError("give either -f FILE or KIND NAME..., not both")
        targets = [Loaded(_key_only(item.resource), item.source, item.position) for item in load_files(args.filename)]
    else:
        if args.kind is None:
            raise UsageError("delete needs KIND NAME... or -f FILE")
        targets = [Loaded(obj, "", "") for obj in named_resources(args.kind, args.names, args.namespace)]

    async def each(client: Client, item: Loaded) -> None:
        deleted = await _delete(client, item.resource, args.resource_version, args.ignore_missing)
        if deleted is None:
            print(f"{describe(item.resource)} not found: nothing to delete", flush=True)
        else:
            print(f"{describe(item.resource)} deleted (at revision {deleted})", flush=True)

    asyncio.run(_each(args, targets, each, "deleted"))
    return 0


def _key_only(obj: Resource) -> Resource:
    """What identifies `obj` for a delete: kind, namespace and name, the name derived as `apply` derives it."""
    if isinstance(obj, WorkloadEndpoint):
        key = WorkloadEndpoint()
        key.metadata.namespace = obj.metadata.namespace or DEFAULT_NAMESPACE
        key.metadata.name = endpoint_name(obj)
        return key
    return Profile(metadata=obj.metadata)


async def _delete(client: Client, obj: Resource, resource_version: int, ignore_missing: bool) -> int | None:
    """Delete `obj`; the revision of the delete, or None when there was nothing to delete (and that is allowed).

    Not found without --ignore-missing raises NotFound (exit 1, as kubectl); with it, the server answers
    without an object, and that is said as it is: nothing was deleted.
    """
    if isinstance(obj, WorkloadEndpoint):
        endpoint = await client.delete_endpoint(
            obj.metadata.name,
            obj.metadata.namespace or DEFAULT_NAMESPACE,
            resource_version=resource_version,
            allow_missing=ignore_missing,
        )
        return endpoint.resource_version if endpoint.HasField("workload_endpoint") else None
    profile = await client.delete_profile(
        obj.metadata.name, resource_version=resource_version, allow_missing=ignore_missing
    )
    return profile.resource_version if profile.HasField("profile") else None
