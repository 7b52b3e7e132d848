"""What the commands share: the client their flags describe, and kinds and names as a user writes them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from epsync.cli.parser import KIND_ALIASES
from epsync.client import Client, ClientTls
from epsync.errors import UsageError
from epsync.model.kinds import DEFAULT_NAMESPACE
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

Resource = WorkloadEndpoint | Profile


def client_of(args: argparse.Namespace) -> Client:
    """The client the command's flags describe: TLS when a CA or a client certificate is given."""
    if args.ca_file is None and args.cert_file is None and args.key_file is None:
        return Client(args.server)
    if (args.cert_file is None) != (args.key_file is None):
        raise UsageError("--cert-file and --key-file go together")
    for path in (args.ca_file, args.cert_file, args.key_file):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    return Client(args.server, tls=ClientTls(args.ca_file, args.cert_file, args.key_file))


def resolve_kind(text: str | None) -> str:
    """ "workloadendpoint" or "profile" for any of their spellings (wep, weps, profiles, ...)."""
    if text is None or text.lower() not in KIND_ALIASES:
        raise UsageError(f"unknown kind {text!r}; use workloadendpoint (wep) or profile")
    return KIND_ALIASES[text.lower()]


def named_resources(kind: str, names: Sequence[str], namespace: str | None) -> list[Resource]:
    """The resources a command line names, as keys (kind, namespace, name) in otherwise empty objects.

    Either `KIND NAME...` or references as `get -o name` prints them, `KIND/NAMESPACE/NAME` for an endpoint
    and `KIND/NAME` (an endpoint in -n's namespace, or a profile), so that `get -o name | xargs delete` works.
    """
    if "/" in kind:
        return [_reference(text, namespace) for text in (kind, *names)]
    resolved = resolve_kind(kind)
    if not names:
        raise UsageError(f"name the {resolved} (or give KIND/NAME)")
    return [_key(resolved, namespace, name) for name in names]


def _reference(text: str, namespace: str | None) -> Resource:
    kind, _, rest = text.partition("/")
    resolved = resolve_kind(kind)
    parts = rest.split("/")
    if resolved == "workloadendpoint" and len(parts) == 2:
        if namespace is not None and namespace != parts[0]:
            raise UsageError(f"{text}: its namespace is not -n {namespace}")
        return _key(resolved, parts[0], parts[1])
    if len(parts) != 1:
        shape = "KIND/NAMESPACE/NAME or KIND/NAME" if resolved == "workloadendpoint" else "profile/NAME"
        raise UsageError(f"{text!r} is not a reference: expected {shape}")
    return _key(resolved, namespace, parts[0])


def _key(kind: str, namespace: str | None, name: str) -> Resource:
    if not name:
        raise UsageError(f"an empty {kind} name")
    if kind == "workloadendpoint":
        endpoint = WorkloadEndpoint()
        endpoint.metadata.namespace = namespace or DEFAULT_NAMESPACE
        endpoint.metadata.name = name
        return endpoint
    profile = Profile()
    profile.metadata.name = name
    return profile


def copy_of(obj: Resource) -> Resource:
    """A copy to change, leaving `obj` as it was."""
    if isinstance(obj, WorkloadEndpoint):
        endpoint = WorkloadEndpoint()
        endpoint.CopyFrom(obj)
        return endpoint
    profile = Profile()
    profile.CopyFrom(obj)
    return profile
