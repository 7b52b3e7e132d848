"""An operator with nothing but grpcurl and server reflection can use the API."""

from __future__ import annotations

import json

from epsync.server.app import EpsyncServer
from tests.conftest import grpcurl_binary, run_command


async def grpcurl(server: EpsyncServer, *args: str) -> str:
    code, out, err = await run_command(grpcurl_binary(), "-plaintext", *args[:-1], f"127.0.0.1:{server.port}", args[-1])
    assert code == 0, err
    return out


async def test_grpcurl_lists_services_and_drives_the_api_through_reflection(server: EpsyncServer) -> None:
    services = (await grpcurl(server, "list")).split()
    assert {"epsync.v1.WorkloadEndpointService", "epsync.v1.ProfileService", "grpc.health.v1.Health"} <= set(services)

    body = {
        "workloadEndpoint": {
            "metadata": {"namespace": "default"},
            "spec": {
                "node": "node1",
                "orchestrator": "k8s",
                "pod": "web-7f9",
                "endpoint": "eth0",
                "containerID": "abc123",
                "ipNetworks": ["10.0.0.7"],
                "interfaceName": "cali123",
            },
        }
    }
    created = json.loads(
        await grpcurl(server, "-d", json.dumps(body), "epsync.v1.WorkloadEndpointService/CreateWorkloadEndpoint")
    )
    endpoint = created["workloadEndpoint"]
    assert endpoint["metadata"]["name"] == "node1-k8s-web--7f9-eth0"
    assert endpoint["spec"]["ipNetworks"] == ["10.0.0.7/32"]

    request = {"namespace": "default", "name": "node1-k8s-web--7f9-eth0"}
    fetched = json.loads(
        await grpcurl(server, "-d", json.dumps(request), "epsync.v1.WorkloadEndpointService/GetWorkloadEndpoint")
    )
    assert fetched["workloadEndpoint"]["metadata"]["resourceVersion"] == endpoint["metadata"]["resourceVersion"]
    assert fetched["workloadEndpoint"]["spec"]["containerID"] == "abc123"


async def test_grpcurl_health_check(server: EpsyncServer) -> None:
    out = json.loads(await grpcurl(server, "grpc.health.v1.Health/Check"))
    assert out["status"] == "SERVING"
