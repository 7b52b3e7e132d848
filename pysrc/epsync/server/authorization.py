"""What each identity may do (SPEC §8), method by method: one table, checked where a request is parsed
(server/registration.py), before it reaches its servicer.

- a node gets, lists and watches only its own node's endpoints (a List or Watch must say
  `node=<own name>`; a Get of another node's endpoint is refused too) and reads profiles;
- the orchestrator does every endpoint operation, `hostPort` and `hostIP` included, and reads profiles;
- an admin does everything else: every profile operation, and endpoint writes that set no
  `hostPort` or `hostIP` (those are the orchestrator's, SPEC §3);
- a viewer reads everything and writes nothing.

Without client certificates every caller is admin and orchestrator (identity.UNAUTHENTICATED).

`--mode kubernetes` adds the seed's supported-operations table for the Kubernetes datastore: endpoints
are tied to pods, so only the orchestrator creates and deletes them (an update that would create one
counts as a create), and profiles are read-only; anything else is FAILED_PRECONDITION quoting the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from epsync.errors import FailedPrecondition, PermissionDenied
from epsync.server.identity import Identities, Identity, Role
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint
from epsync.v1.workload_endpoint_service_pb2 import WriteWorkloadEndpointsRequest

# Why a request is refused, or None when it may go ahead.
Check = Callable[[Identity, Any], str | None]

READERS = frozenset(Role)  # every identity of ours reads (a node, of endpoints only its own)


def _reads(identity: Identity, _request: Any) -> str | None:
    return None if identity.roles & READERS else f"{_who(identity)} may do nothing here"


def _reads_endpoints_of_a_node(identity: Identity, request: Any) -> str | None:
    node = identity.node
    if node is None:
        return _reads(identity, request)
    if request.node == node:
        return None
    asked = f"node {request.node!r}" if request.node else "every node"
    return (
        f"{identity} may get, list and watch only node {node!r}'s endpoints (node={node!r}) and read profiles; "
        f"this asks for {asked}"
    )


def _writes_endpoint(identity: Identity, endpoint: WorkloadEndpoint | None) -> str | None:
    if Role.ORCHESTRATOR in identity.roles:
        return None
    if Role.ADMIN not in identity.roles:
        return f"{_who(identity)} may not write endpoints"
    if endpoint is not None:
        for i, port in enumerate(endpoint.spec.ports):
            for field, value in (("hostPort", port.host_port), ("hostIP", port.host_ip)):
                if value:
                    return f"{identity} may not set spec.ports[{i}].{field}: only the orchestrator sets host ports"
    return None


def _writes_profiles(identity: Identity, _request: Any) -> str | None:
    return None if Role.ADMIN in identity.roles else f"{_who(identity)} may not write profiles"


def _who(identity: Identity) -> str:
    return str(identity) if identity.roles else "a certificate that names no epsync identity"


def _write_operation(identity: Identity, write: WriteWorkloadEndpointsRequest) -> str | None:
    operation = write.WhichOneof("operation")
    if operation == "create":
        return _writes_endpoint(identity, write.create.workload_endpoint)
    if operation == "update":
        return _writes_endpoint(identity, write.update.workload_endpoint)
    return _writes_endpoint(identity, None)


RULES: dict[str, Check] = {
    "GetWorkloadEndpoint": _reads,  # and the endpoint returned must be a node's own (check_response)
    "ListWorkloadEndpoints": _reads_endpoints_of_a_node,
    "WatchWorkloadEndpoints": _reads_endpoints_of_a_node,
    "CreateWorkloadEndpoint": lambda identity, request: _writes_endpoint(identity, request.workload_endpoint),
    "UpdateWorkloadEndpoint": lambda identity, request: _writes_endpoint(identity, request.workload_endpoint),
    "DeleteWorkloadEndpoint": lambda identity, _request: _writes_endpoint(identity, None),
    "WriteWorkloadEndpoints": lambda identity, _requests: _writes_endpoint(identity, None),  # then each write
    "GetProfile": _reads,
    "ListProfiles": _reads,
    "WatchProfiles": _reads,
    "CreateProfile": _writes_profiles,
    "UpdateProfile": _writes_profiles,
    "DeleteProfile": _writes_profiles,
    "GetStatus": _reads,
}


KUBERNETES_TABLE = (
    "in kubernetes mode the seed's operations table applies (Kubernetes API server datastore: "
    "Create/Delete no, Update yes, Get/List yes; WorkloadEndpoints are tied to pods): only the orchestrator "
    "creates and deletes endpoints, and profiles are read-only"
)
# What the table refuses in kubernetes mode, per method: a check of the caller's identity, True if refused.
KUBERNETES_RULES: dict[str, Callable[[Identity], bool]] = {
    "CreateWorkloadEndpoint": lambda identity: Role.ORCHESTRATOR not in identity.roles,
    "DeleteWorkloadEndpoint": lambda identity: Role.ORCHESTRATOR not in identity.roles,
    "CreateProfile": lambda identity: True,
    "UpdateProfile": lambda identity: True,
    "DeleteProfile": lambda identity: True,
}


def denied(identity: Identity, reason: str) -> PermissionDenied:
    return PermissionDenied(reason, reason="FORBIDDEN", metadata={"identity": str(identity)})


class Authorizer:
    """RULES applied to calls, with the caller's identity from its certificate."""

    def __init__(self, identities: Identities, *, kubernetes: bool = False) -> None:
        self.identities = identities
        self.kubernetes = kubernetes

    def check(self, method: str, context: Any, request: Any) -> Identity:
        """The caller's identity; PermissionDenied when RULES refuse the request, FailedPrecondition when
        kubernetes mode's table does."""
        identity = self.identities.of(context)
        refused = RULES[method](identity, request)
        if refused is not None:
            raise denied(identity, refused)
        table_refuses = KUBERNETES_RULES.get(method)
        if self.kubernetes and table_refuses is not None and table_refuses(identity):
            raise FailedPrecondition(f"{method}: {KUBERNETES_TABLE}", reason="OPERATION_NOT_SUPPORTED")
        return identity

    def create_refused(self, context: Any) -> str:
        """For an update with allow_missing: why it may not create (kubernetes mode, not the orchestrator),
        or "" when it may. The registry applies it where the commit is planned (UpdateOp.create_refused)."""
        if self.kubernetes and Role.ORCHESTRATOR not in self.identities.of(context).roles:
            return "an update that would create it counts as a create; " + KUBERNETES_TABLE
        return ""

    def check_response(self, method: str, identity: Identity, response: Any) -> None:
        """A node's Get answers only with its own node's endpoint."""
        node = identity.node
        if method == "GetWorkloadEndpoint" and node is not None:
            found = response.workload_endpoint.spec.node
            if found != node:
                raise denied(identity, f"{identity} may get only node {node!r}'s endpoints; this one is on {found!r}")

    def write_check(
        self, context: Any
    ) -> Callable[[WriteWorkloadEndpointsRequest], PermissionDenied | FailedPrecondition | None]:
        """Each write of a write stream, for the stream's caller: its refusal, or None."""
        identity = self.identities.of(context)

        def check(write: WriteWorkloadEndpointsRequest) -> PermissionDenied | FailedPrecondition | None:
            refused = _write_operation(identity, write)
            if refused is not None:
                return denied(identity, refused)
            operation = write.WhichOneof("operation")
            method = {"create": "CreateWorkloadEndpoint", "delete": "DeleteWorkloadEndpoint"}.get(operation or "")
            if self.kubernetes and method and KUBERNETES_RULES[method](identity):
                return FailedPrecondition(f"{method}: {KUBERNETES_TABLE}", reason="OPERATION_NOT_SUPPORTED")
            return None

        return check
