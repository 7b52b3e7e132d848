"""Identities and what each may do (SPEC §8), every identity against every method, on a real server
with mutual TLS and certificates the test makes.

The table EXPECTED says, per call, which identities may make it; every other identity must get
PERMISSION_DENIED naming who it is (and the call must change nothing). A test fails when a method of
either service has no rule (server/authorization.py) or no row here.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path

import grpc
import pytest

from epsync.client import Client, ClientTls
from epsync.errors import EpsyncError, error_from_status
from epsync.server.app import ENDPOINT_SERVICE, PROFILE_SERVICE, STATUS_SERVICE, EpsyncServer
from epsync.server.authorization import RULES
from epsync.server.identity import Role, identity_of_certificate
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort
from tests.certs import Authority
from tests.conftest import server_config
from tests.factories import endpoint, profile

pytestmark = pytest.mark.timeout(120)

# Who calls: a certificate each. node1 by URI SAN, node2 by CN, the others by URI SAN; "stranger" names no
# identity of ours (another trust domain and a CN without a role).
CALLERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "node1": ("node1.example", ("spiffe://epsync/node/node1",)),
    "node2": ("node:node2", ()),
    "orchestrator": ("cni", ("spiffe://epsync/orchestrator/cni",)),
    "admin": ("ops", ("spiffe://epsync/admin/ops",)),
    "viewer": ("dashboard", ("spiffe://epsync/viewer/dashboard",)),
    "stranger": ("someone", ("spiffe://elsewhere/admin/ops",)),
}
EVERYONE = frozenset(CALLERS) - {"stranger"}
WRITERS = frozenset({"orchestrator", "admin"})

Call = Callable[[Client, str], Awaitable[object]]
_counter = itertools.count()


def _fresh(who: str) -> str:
    return f"{who}-{next(_counter)}"


async def _watch_endpoints(client: Client, node: str) -> None:
    async for event in client.watch(node=node):
        if event.initial_events_end:
            return


async def _watch_profiles(client: Client) -> None:
    async for event in client.watch_profiles():
        if event.initial_events_end:
            return


async def _write_stream(client: Client, who: str, *, host_port: bool = False) -> None:
    ports = [WorkloadEndpointPort(name="http", protocol="TCP", port=80, host_port=8080)] if host_port else []
    request = wep_pb.WriteWorkloadEndpointsRequest(
        request_id="1",
        create=wep_pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint(_fresh(who), node="node1", ports=ports)),
    )
    async for response in client.write_endpoints([request]):
        if response.status.code:  # this write's own refusal; the stream itself went on
            code = next(c for c in grpc.StatusCode if c.value[0] == response.status.code)
            raise error_from_status(code, response.status, response.status.message)


def _with_host_port(name: str) -> WorkloadEndpoint:
    return endpoint(
        name, node="node1", ports=[WorkloadEndpointPort(name="http", protocol="TCP", port=80, host_port=8080)]
    )


async def _listed(iterator: AsyncIterator[object]) -> list[object]:
    return [item async for item in iterator]


# (what the call does, who may make it, the call)
EXPECTED: list[tuple[str, Collection[str], Call]] = [
    ("GetWorkloadEndpoint of node1's endpoint", EVERYONE - {"node2"}, lambda c, w: c.get_endpoint("on-node1")),
    ("GetWorkloadEndpoint of node2's endpoint", EVERYONE - {"node1"}, lambda c, w: c.get_endpoint("on-node2")),
    ("ListWorkloadEndpoints node=node1", EVERYONE - {"node2"}, lambda c, w: _listed(c.list_endpoints(node="node1"))),
    ("ListWorkloadEndpoints of every node", EVERYONE - {"node1", "node2"}, lambda c, w: _listed(c.list_endpoints())),
    ("WatchWorkloadEndpoints node=node1", EVERYONE - {"node2"}, lambda c, w: _watch_endpoints(c, "node1")),
    ("WatchWorkloadEndpoints of every node", EVERYONE - {"node1", "node2"}, lambda c, w: _watch_endpoints(c, "")),
    ("CreateWorkloadEndpoint", WRITERS, lambda c, w: c.create_endpoint(endpoint(_fresh(w), node="node1"))),
    (
        "CreateWorkloadEndpoint with a hostPort",
        {"orchestrator"},
        lambda c, w: c.create_endpoint(_with_host_port(_fresh(w))),
    ),
    (
        "UpdateWorkloadEndpoint",
        WRITERS,
        lambda c, w: c.update_endpoint(endpoint(_fresh(w), node="node1"), allow_missing=True),
    ),
    ("DeleteWorkloadEndpoint", WRITERS, lambda c, w: c.delete_endpoint(_fresh(w), allow_missing=True)),
    ("WriteWorkloadEndpoints create", WRITERS, lambda c, w: _write_stream(c, w)),
    (
        "WriteWorkloadEndpoints create with a hostPort",
        {"orchestrator"},
        lambda c, w: _write_stream(c, w, host_port=True),
    ),
    ("GetProfile", EVERYONE, lambda c, w: c.get_profile("kns.default")),
    ("ListProfiles", EVERYONE, lambda c, w: _listed(c.list_profiles())),
    ("WatchProfiles", EVERYONE, lambda c, w: _watch_profiles(c)),
    ("CreateProfile", {"admin"}, lambda c, w: c.create_profile(profile(_fresh(w)))),
    ("UpdateProfile", {"admin"}, lambda c, w: c.update_profile(profile(_fresh(w)), allow_missing=True)),
    ("DeleteProfile", {"admin"}, lambda c, w: c.delete_profile(_fresh(w), allow_missing=True)),
    ("GetStatus", EVERYONE, lambda c, w: c.get_status()),
]


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority()


@pytest.fixture
async def mtls(tmp_path: Path, ca: Authority) -> AsyncIterator[dict[str, Client]]:
    cert, key = ca.issue("epsync server", server=True).write(tmp_path / "server", "server")
    ca_file = ca.write(tmp_path / "server")
    server = EpsyncServer(
        server_config(tmp_path / "data", tls_cert_file=cert, tls_key_file=key, client_ca_file=ca_file)
    )
    await server.start()
    clients: dict[str, Client] = {}
    try:
        for who, (common_name, uris) in CALLERS.items():
            client_cert, client_key = ca.issue(common_name, uris=uris).write(tmp_path / who, who)
            tls = ClientTls(ca_file, client_cert, client_key)
            clients[who] = Client(f"127.0.0.1:{server.port}", timeout=10, tls=tls)
        orchestrator, admin = clients["orchestrator"], clients["admin"]
        await orchestrator.create_endpoint(endpoint("on-node1", node="node1"))
        await orchestrator.create_endpoint(endpoint("on-node2", node="node2"))
        await admin.create_profile(profile("kns.default"))
        yield clients
    finally:
        for client in clients.values():
            await client.close()
        await server.stop(grace=0.1)


def test_every_method_has_a_rule_and_a_row() -> None:
    methods = {m.name for service in (ENDPOINT_SERVICE, PROFILE_SERVICE, STATUS_SERVICE) for m in service.methods}
    assert set(RULES) == methods
    assert {what.split()[0] for what, _, _ in EXPECTED} == methods


async def test_every_identity_against_every_method(mtls: dict[str, Client]) -> None:
    wrong: list[str] = []
    for what, allowed, call in EXPECTED:
        for who, client in mtls.items():
            try:
                await call(client, who)
            except EpsyncError as error:
                if who in allowed:
                    wrong.append(f"{who}: {what}: refused: {error.code.name} {error.message}")
                elif error.code != grpc.StatusCode.PERMISSION_DENIED:
                    wrong.append(f"{who}: {what}: {error.code.name} {error.message}, not PERMISSION_DENIED")
                elif who != "stranger" and who not in error.message and CALLERS[who][0] not in error.message:
                    wrong.append(f"{who}: {what}: the refusal does not name the caller: {error.message}")
            else:
                if who not in allowed:
                    wrong.append(f"{who}: {what}: allowed")
    assert not wrong, "\n".join(wrong)


async def test_refusals_say_what_the_caller_may_do_and_change_nothing(mtls: dict[str, Client]) -> None:
    with pytest.raises(EpsyncError) as refused:
        await _listed(mtls["node1"].list_endpoints(node="node2"))
    assert "node node1 may get, list and watch only node 'node1''s endpoints" in refused.value.message
    assert refused.value.metadata == {"identity": "node node1"}
    with pytest.raises(EpsyncError) as refused:
        await mtls["admin"].create_endpoint(_with_host_port("admin-hostport"))
    assert "admin ops may not set spec.ports[0].hostPort" in refused.value.message
    with pytest.raises(EpsyncError, match=r"not found"):
        await mtls["orchestrator"].get_endpoint("admin-hostport")
    with pytest.raises(EpsyncError) as refused:
        await mtls["viewer"].delete_endpoint("on-node1")
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert (await mtls["viewer"].get_endpoint("on-node1")).spec.node == "node1"


def test_identities_are_read_from_uri_sans_then_the_common_name(ca: Authority) -> None:
    def of(common_name: str, *uris: str, domain: str = "epsync") -> tuple[set[Role], str]:
        identity = identity_of_certificate(ca.issue(common_name, uris=uris).cert_pem, domain)
        return set(identity.roles), identity.name

    assert of("x", "spiffe://epsync/node/node7") == ({Role.NODE}, "node7")
    assert of("node:node8") == ({Role.NODE}, "node8")
    assert of("viewer:grafana", "spiffe://epsync/orchestrator/cni") == ({Role.ORCHESTRATOR}, "cni")
    assert of("x", "spiffe://corp/node/a", domain="corp") == ({Role.NODE}, "a")
    assert of("x", "spiffe://corp/node/a") == (set(), "")  # another trust domain
    assert of("node:") == (set(), "")  # a node must say which
    assert of("root:everything") == (set(), "")
    assert of("orchestrator") == ({Role.ORCHESTRATOR}, "")  # a bare role as CN
    assert of("viewer") == ({Role.VIEWER}, "")
    assert of("node") == (set(), "")
