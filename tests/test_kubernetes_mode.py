"""`--mode kubernetes`: the seed's supported-operations table for the Kubernetes datastore. Endpoints are
tied to pods: only the orchestrator creates and deletes them (an update that would create one counts as a
create), everyone else may update, get, list and watch as their identity allows; profiles are read-only.
What the table refuses is FAILED_PRECONDITION quoting it, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from epsync.client import Client, ClientTls
from epsync.errors import EpsyncError
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from tests.certs import Authority
from tests.conftest import server_config
from tests.factories import endpoint, profile

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def k8s(tmp_path: Path) -> AsyncIterator[dict[str, Client]]:
    ca = Authority()
    cert, key = ca.issue("epsync server", server=True).write(tmp_path / "server", "server")
    ca_file = ca.write(tmp_path / "server")
    config = server_config(
        tmp_path / "data", tls_cert_file=cert, tls_key_file=key, client_ca_file=ca_file, mode="kubernetes"
    )
    server = EpsyncServer(config)
    await server.start()
    clients = {}
    try:
        for who, common_name in (("orchestrator", "orchestrator"), ("admin", "admin:ops"), ("node1", "node:node1")):
            tls = ClientTls(ca_file, *ca.issue(common_name).write(tmp_path / who, who))
            clients[who] = Client(f"127.0.0.1:{server.port}", timeout=10, tls=tls)
        yield clients
    finally:
        for client in clients.values():
            await client.close()
        await server.stop(grace=0.1)


async def _refused_by_the_table(call: object) -> None:
    with pytest.raises(EpsyncError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION, refused.value
    assert refused.value.reason == "OPERATION_NOT_SUPPORTED"
    assert "Create/Delete no, Update yes, Get/List yes; WorkloadEndpoints are tied to pods" in refused.value.message


async def test_only_the_orchestrator_creates_and_deletes_endpoints(k8s: dict[str, Client]) -> None:
    orchestrator, admin, node1 = k8s["orchestrator"], k8s["admin"], k8s["node1"]
    created = await orchestrator.create_endpoint(endpoint("pod-a", node="node1", labels={"app": "web"}))
    await _refused_by_the_table(admin.create_endpoint(endpoint("by-admin", node="node1")))
    await _refused_by_the_table(admin.delete_endpoint("pod-a"))
    # Update is allowed; an update that would create is a create.
    changed = endpoint("pod-a", node="node1", labels={"app": "db"})
    assert (await admin.update_endpoint(changed)).metadata.labels["app"] == "db"
    await _refused_by_the_table(admin.update_endpoint(endpoint("missing", node="node1"), allow_missing=True))
    assert (await orchestrator.update_endpoint(endpoint("made", node="node1"), allow_missing=True)).metadata.name
    # Reads as the identity allows.
    assert (await node1.get_endpoint("pod-a")).metadata.uid == created.metadata.uid
    names = sorted([e.metadata.name async for e in admin.list_endpoints()])
    assert names == ["made", "pod-a"]  # nothing the table refused was made
    await orchestrator.delete_endpoint("made")


async def test_the_write_stream_applies_the_table_write_by_write(k8s: dict[str, Client]) -> None:
    admin = k8s["admin"]
    await k8s["orchestrator"].create_endpoint(endpoint("pod-b", node="node1"))
    requests = [
        wep_pb.WriteWorkloadEndpointsRequest(
            request_id="create",
            create=wep_pb.CreateWorkloadEndpointRequest(workload_endpoint=endpoint("by-admin", node="node1")),
        ),
        wep_pb.WriteWorkloadEndpointsRequest(
            request_id="update",
            update=wep_pb.UpdateWorkloadEndpointRequest(workload_endpoint=endpoint("pod-b", node="node1")),
        ),
        wep_pb.WriteWorkloadEndpointsRequest(
            request_id="upsert",
            update=wep_pb.UpdateWorkloadEndpointRequest(
                workload_endpoint=endpoint("new-pod", node="node1"), allow_missing=True
            ),
        ),
        wep_pb.WriteWorkloadEndpointsRequest(
            request_id="delete", delete=wep_pb.DeleteWorkloadEndpointRequest(namespace="default", name="pod-b")
        ),
    ]
    codes = {r.request_id: r.status.code async for r in admin.write_endpoints(requests)}
    precondition = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert codes == {"create": precondition, "update": 0, "upsert": precondition, "delete": precondition}
    assert sorted([e.metadata.name async for e in admin.list_endpoints()]) == ["pod-b"]


async def test_profiles_are_read_only(k8s: dict[str, Client]) -> None:
    admin = k8s["admin"]
    await _refused_by_the_table(admin.create_profile(profile("kns.default")))
    await _refused_by_the_table(admin.update_profile(profile("kns.default"), allow_missing=True))
    await _refused_by_the_table(admin.delete_profile("kns.default", allow_missing=True))
    assert [p async for p in admin.list_profiles()] == []


async def test_without_client_certificates_every_caller_is_the_orchestrator(tmp_path: Path) -> None:
    server = EpsyncServer(server_config(tmp_path / "data", mode="kubernetes"))
    await server.start()
    try:
        async with Client(f"127.0.0.1:{server.port}", timeout=10) as client:
            await client.create_endpoint(endpoint("pod", node="node1"))
            await client.delete_endpoint("pod")
            await _refused_by_the_table(client.create_profile(profile("kns.default")))
    finally:
        await server.stop(grace=0.1)
