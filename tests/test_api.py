"""The standard methods over a real gRPC server on loopback with a real SQLite store."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from epsync.client import Client
from epsync.errors import Aborted, AlreadyExists, EpsyncError, InvalidArgument, NotFound, Unavailable
from epsync.server.app import EpsyncServer
from epsync.v1 import workload_endpoint_service_pb2 as wep_pb
from epsync.v1.workload_endpoint_pb2 import IPNAT, WorkloadEndpointPort
from tests.conftest import server_config
from tests.factories import endpoint, k8s_endpoint, profile


async def test_create_sets_server_owned_metadata_and_labels(client: Client) -> None:
    created = await client.create_endpoint(endpoint("web-1", namespace="prod", labels={"app": "web"}))
    meta = created.metadata
    assert meta.resource_version > 0
    assert meta.uid
    assert meta.creation_timestamp.seconds > 0
    assert meta.labels["projectcalico.org/namespace"] == "prod"
    assert meta.labels["app"] == "web"
    assert await client.get_endpoint("web-1", "prod") == created


async def test_create_ignores_client_supplied_server_fields(client: Client) -> None:
    sent = endpoint("web-1")
    sent.metadata.uid = "chosen-by-client"
    sent.metadata.resource_version = 999
    created = await client.create_endpoint(sent)
    assert created.metadata.uid != "chosen-by-client"
    assert created.metadata.resource_version != 999


async def test_create_without_name_gets_the_derived_name(client: Client) -> None:
    created = await client.create_endpoint(k8s_endpoint("node1", "my-nginx-b1337a"))
    assert created.metadata.name == "node1-k8s-my--nginx--b1337a-eth0"
    assert created.metadata.labels["projectcalico.org/orchestrator"] == "k8s"


async def test_create_twice_is_already_exists(client: Client) -> None:
    await client.create_endpoint(endpoint("web-1"))
    with pytest.raises(AlreadyExists, match="already exists"):
        await client.create_endpoint(endpoint("web-1"))


async def test_get_missing_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match='WorkloadEndpoint "default/nope" not found'):
        await client.get_endpoint("nope")


async def test_invalid_endpoint_reports_every_violation_and_stores_nothing(client: Client) -> None:
    bad = endpoint("web-1", ip="10.0.0.1")
    bad.spec.mac = "ca:fe:1d:52:bb"
    bad.spec.ports.extend(
        [
            WorkloadEndpointPort(name="http", protocol="TCP", port=80),
            WorkloadEndpointPort(name="http", protocol="TCP", port=70000),
        ]
    )
    bad.spec.ip_nats.append(IPNAT(internal_ip="10.9.9.9", external_ip="1.2.3.4"))
    with pytest.raises(InvalidArgument) as raised:
        await client.create_endpoint(bad)
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    fields = {v.field for v in raised.value.violations}
    assert {"spec.mac", "spec.ports[1].name", "spec.ports[1].port", "spec.ipNATs[0].internalIP"} <= fields
    assert [e async for e in client.list_endpoints(namespace="")] == []


async def test_update_replaces_and_keeps_identity(client: Client) -> None:
    created = await client.create_endpoint(endpoint("web-1", labels={"app": "web"}))
    changed = endpoint("web-1", labels={"app": "api"})
    changed.metadata.resource_version = created.metadata.resource_version
    updated = await client.update_endpoint(changed)
    assert updated.metadata.labels["app"] == "api"
    assert updated.metadata.resource_version > created.metadata.resource_version
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp


async def test_update_with_stale_resource_version_is_aborted(client: Client) -> None:
    created = await client.create_endpoint(endpoint("web-1"))
    await client.update_endpoint(endpoint("web-1", labels={"v": "2"}))
    stale = endpoint("web-1", labels={"v": "3"})
    stale.metadata.resource_version = created.metadata.resource_version
    with pytest.raises(Aborted, match="re-read it and retry"):
        await client.update_endpoint(stale)
    assert (await client.get_endpoint("web-1")).metadata.labels["v"] == "2"


async def test_update_missing_needs_allow_missing(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.update_endpoint(endpoint("web-1"))
    upserted = await client.update_endpoint(endpoint("web-1"), allow_missing=True)
    assert upserted.metadata.uid


async def test_concurrent_unversioned_updates_all_land(client: Client) -> None:
    await client.create_endpoint(endpoint("web-1"))
    results = await asyncio.gather(
        *(client.update_endpoint(endpoint("web-1", labels={"n": str(i)})) for i in range(20))
    )
    revisions = [r.metadata.resource_version for r in results]
    assert len(set(revisions)) == 20
    final = await client.get_endpoint("web-1")
    assert final.metadata.resource_version == max(revisions)


async def test_node_of_a_derived_name_cannot_change(client: Client) -> None:
    created = await client.create_endpoint(k8s_endpoint("node1", "pod-a"))
    moved = k8s_endpoint("node2", "pod-a")
    moved.metadata.name = created.metadata.name
    with pytest.raises(InvalidArgument) as raised:
        await client.update_endpoint(moved)
    assert any(v.field == "metadata.name" for v in raised.value.violations)


async def test_node_of_a_plain_name_may_change(client: Client) -> None:
    await client.create_endpoint(endpoint("web-1", node="node1"))
    moved = await client.update_endpoint(endpoint("web-1", node="node2"))
    assert moved.spec.node == "node2"


async def test_delete_preconditions(client: Client) -> None:
    created = await client.create_endpoint(endpoint("web-1"))
    with pytest.raises(Aborted):
        await client.delete_endpoint("web-1", resource_version=created.metadata.resource_version + 100)
    with pytest.raises(Aborted, match="uid"):
        await client.delete_endpoint("web-1", uid="another-uid")
    deleted = await client.delete_endpoint(
        "web-1", resource_version=created.metadata.resource_version, uid=created.metadata.uid
    )
    assert deleted.workload_endpoint.metadata.uid == created.metadata.uid
    assert deleted.resource_version > created.metadata.resource_version
    with pytest.raises(NotFound):
        await client.delete_endpoint("web-1")
    gone = await client.delete_endpoint("web-1", allow_missing=True)
    assert not gone.HasField("workload_endpoint")


async def test_revisions_are_one_counter_across_kinds_and_never_reused(client: Client) -> None:
    seen = []
    seen.append((await client.create_profile(profile("p1"))).metadata.resource_version)
    seen.append((await client.create_endpoint(endpoint("a"))).metadata.resource_version)
    seen.append((await client.delete_endpoint("a")).resource_version)
    seen.append((await client.create_endpoint(endpoint("a"))).metadata.resource_version)
    seen.append((await client.delete_profile("p1")).resource_version)
    assert seen == sorted(seen)
    assert len(set(seen)) == len(seen)


async def test_list_filters_by_namespace_and_node(client: Client) -> None:
    await client.create_endpoint(endpoint("a", namespace="ns1", node="n1"))
    await client.create_endpoint(endpoint("b", namespace="ns1", node="n2"))
    await client.create_endpoint(endpoint("c", namespace="ns2", node="n1"))

    async def names(namespace: str = "", node: str = "") -> list[str]:
        listing = client.list_endpoints(namespace=namespace, node=node)
        return [f"{e.metadata.namespace}/{e.metadata.name}" async for e in listing]

    assert await names() == ["ns1/a", "ns1/b", "ns2/c"]
    assert await names(namespace="ns1") == ["ns1/a", "ns1/b"]
    assert await names(node="n1") == ["ns1/a", "ns2/c"]
    assert await names(namespace="ns2", node="n2") == []


async def test_list_selector_sees_inherited_profile_labels(client: Client) -> None:
    await client.create_profile(profile("web-profile", {"role": "web", "tier": "frontend"}))
    await client.create_endpoint(endpoint("inherits", profiles=["web-profile"]))
    await client.create_endpoint(endpoint("overrides", profiles=["web-profile"], labels={"tier": "backend"}))
    await client.create_endpoint(endpoint("missing-profile", profiles=["not-there"]))

    async def selected(selector: str) -> list[str]:
        return [e.metadata.name async for e in client.list_endpoints(selector=selector)]

    assert await selected("role == 'web'") == ["inherits", "overrides"]
    assert await selected("tier == 'frontend'") == ["inherits"]
    assert await selected("!has(role)") == ["missing-profile"]

    await client.update_profile(profile("web-profile", {"role": "db"}))
    assert await selected("role == 'web'") == []
    await client.delete_profile("web-profile")
    assert await selected("has(role)") == []


async def test_list_bad_selector_names_the_position(client: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(label_selector="app == "))
    (violation,) = raised.value.violations
    assert violation.field == "label_selector"
    assert "position" in violation.description


async def test_paging_returns_everything_once_in_order(client: Client) -> None:
    for namespace in ("a", "a-b", "b"):
        for i in range(7):
            await client.create_endpoint(endpoint(f"ep-{i}", namespace=namespace))
    request = wep_pb.ListWorkloadEndpointsRequest(page_size=4)
    first = await client.list_endpoints_page(request)
    keys = [(e.metadata.namespace, e.metadata.name) for e in first.items]
    revision = first.resource_version
    token = first.next_page_token
    # Objects created behind the cursor during the listing must not disturb the rest of it.
    await client.create_endpoint(endpoint("aaa", namespace="a"))
    while token:
        page = await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=4, page_token=token))
        assert page.resource_version == revision
        keys.extend((e.metadata.namespace, e.metadata.name) for e in page.items)
        token = page.next_page_token
    expected = sorted((ns, f"ep-{i}") for ns in ("a", "a-b", "b") for i in range(7))
    assert keys == expected


async def test_page_token_is_bound_to_its_filter(client: Client) -> None:
    for i in range(3):
        await client.create_endpoint(endpoint(f"ep-{i}"))
    first = await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1))
    with pytest.raises(InvalidArgument, match="different filter"):
        await client.list_endpoints_page(
            wep_pb.ListWorkloadEndpointsRequest(page_size=1, page_token=first.next_page_token, node="other")
        )
    with pytest.raises(InvalidArgument, match="not a token"):
        await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_token="garbage!"))


async def test_page_size_is_clamped_and_negative_is_refused(client: Client) -> None:
    await client.create_endpoint(endpoint("ep"))
    page = await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1_000_000))
    assert len(page.items) == 1
    with pytest.raises(InvalidArgument, match="negative"):
        await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=-1))


async def test_min_resource_version_from_the_future_is_unavailable(client: Client) -> None:
    created = await client.create_endpoint(endpoint("ep"))
    with pytest.raises(Unavailable, match="did not reach"):
        await client.list_endpoints_page(
            wep_pb.ListWorkloadEndpointsRequest(min_resource_version=created.metadata.resource_version + 10)
        )
    page = await client.list_endpoints_page(
        wep_pb.ListWorkloadEndpointsRequest(min_resource_version=created.metadata.resource_version)
    )
    assert len(page.items) == 1


async def test_profiles_crud_and_list(client: Client) -> None:
    created = await client.create_profile(profile("p1", {"role": "web"}))
    assert created.metadata.uid
    assert (await client.get_profile("p1")).spec.labels_to_apply == {"role": "web"}
    await client.create_profile(profile("p2"))
    assert [p.metadata.name async for p in client.list_profiles()] == ["p1", "p2"]
    with pytest.raises(AlreadyExists):
        await client.create_profile(profile("p1"))
    namespaced = profile("p3")
    namespaced.metadata.namespace = "default"
    with pytest.raises(InvalidArgument):
        await client.create_profile(namespaced)


async def test_profile_list_selector_uses_profile_labels(client: Client) -> None:
    labelled = profile("p1")
    labelled.metadata.labels["team"] = "net"
    await client.create_profile(labelled)
    await client.create_profile(profile("p2"))
    assert [p.metadata.name async for p in client.list_profiles(selector="team == 'net'")] == ["p1"]


async def test_missing_name_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="name is required"):
        await client.get_endpoint("")


async def test_errors_carry_status_codes(client: Client) -> None:
    with pytest.raises(EpsyncError) as raised:
        await client.get_profile("nope")
    assert raised.value.code is grpc.StatusCode.NOT_FOUND


async def test_health_reports_serving(server: EpsyncServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "epsync.v1.WorkloadEndpointService", "epsync.v1.ProfileService"):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_closed_datastore_is_unavailable_not_internal(server: EpsyncServer, client: Client) -> None:
    await server.store.close()
    with pytest.raises(Unavailable, match="datastore cannot take this request"):
        await client.create_endpoint(endpoint("web-1"))


def _token_with(token: str, change: Callable[[dict[str, Any]], object]) -> str:
    """`token` with its payload edited and its signature kept (a forgery)."""
    encoded, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    change(payload)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + signature


async def test_page_tokens_are_signed_bounded_and_checked(client: Client, tmp_path: Path) -> None:
    for i in range(3):
        await client.create_endpoint(endpoint(f"ep-{i}"))
    first = await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1))
    token = first.next_page_token
    forged = [
        _token_with(token, lambda p: p.update(r=-1)),  # a revision the store never had
        _token_with(token, lambda p: p.update(r=first.resource_version + 1000)),
        _token_with(token, lambda p: p.update(k=["default", "ep-9"])),  # another position
        token.replace(".", "x"),  # no signature
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # a bad signature
        "a" * 5000,  # too long to be one of ours
        "e30." + token.split(".")[1],  # {} with another payload's signature
    ]
    for bad in forged:
        with pytest.raises(InvalidArgument, match="not a token this server issued"):
            await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1, page_token=bad))
    # Another store (another data directory) has another secret: its tokens are not ours.
    other = EpsyncServer(server_config(tmp_path / "other"))
    await other.start()
    try:
        async with Client(f"127.0.0.1:{other.port}") as elsewhere:
            for i in range(3):
                await elsewhere.create_endpoint(endpoint(f"ep-{i}"))
            with pytest.raises(InvalidArgument, match="not a token this server issued"):
                await elsewhere.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1, page_token=token))
    finally:
        await other.stop(0)
    # The genuine token still works.
    second = await client.list_endpoints_page(wep_pb.ListWorkloadEndpointsRequest(page_size=1, page_token=token))
    assert [e.metadata.name for e in second.items] == ["ep-1"]
