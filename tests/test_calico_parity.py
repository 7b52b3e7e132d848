"""Calico's selectors, validation and WorkloadEndpoint fields, through a real server (issue 14, item 1)."""

from __future__ import annotations

import pytest

from epsync.client import Client
from epsync.errors import InvalidArgument
from epsync.v1.workload_endpoint_pb2 import QoSControls, WorkloadEndpointPort
from tests.factories import endpoint, profile


async def _names(client: Client, selector: str) -> list[str]:
    return [e.metadata.name async for e in client.list_endpoints(namespace="", selector=selector)]


async def test_one_word_selector_operators_select_as_the_two_word_ones(client: Client) -> None:
    await client.create_endpoint(endpoint("web-1", labels={"app": "web-frontend"}, ip="10.0.0.1"))
    await client.create_endpoint(endpoint("db-1", labels={"app": "db"}, ip="10.0.0.2"))
    assert await _names(client, "app startswith 'web'") == ["web-1"]
    assert await _names(client, "app endswith 'end'") == ["web-1"]
    assert await _names(client, "app notin {'db'}") == ["web-1"]
    assert await _names(client, "app not in {'db'}") == ["web-1"]


async def test_a_misspelt_one_word_operator_is_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgument, match="expected an operator"):
        await _names(client, "app startwith 'web'")


async def test_an_endpoint_without_an_interface_name_is_refused(client: Client) -> None:
    bare = endpoint("web-1")
    bare.spec.interface_name = ""
    with pytest.raises(InvalidArgument) as raised:
        await client.create_endpoint(bare)
    assert [v.field for v in raised.value.violations] == ["spec.interfaceName"]
    assert [e async for e in client.list_endpoints(namespace="")] == []


async def test_a_profile_no_endpoint_could_name_is_refused(client: Client) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await client.create_profile(profile("tHiNg"))
    assert [v.field for v in raised.value.violations] == ["metadata.name"]
    assert "as spec.profiles requires" in raised.value.violations[0].description
    created = await client.create_profile(profile("thing", {"role": "web"}))
    assert created.metadata.name == "thing"


async def test_port_protocols_are_taken_as_calico_spells_them(client: Client) -> None:
    lower = endpoint("web-1", ports=[WorkloadEndpointPort(name="http", protocol="tcp", port=80)])
    with pytest.raises(InvalidArgument) as raised:
        await client.create_endpoint(lower)
    (violation,) = raised.value.violations
    assert violation.field == "spec.ports[0].protocol"
    assert "TCP, UDP or SCTP" in violation.description
    numeric = endpoint("web-2", ports=[WorkloadEndpointPort(name="dns", protocol="017", port=53)])
    stored = await client.create_endpoint(numeric)
    assert stored.spec.ports[0].protocol == "17"


async def test_the_current_v3_fields_are_stored_and_read_back(client: Client) -> None:
    wep = endpoint("web-1")
    wep.metadata.annotations["example.com/owner"] = "net team"
    wep.spec.service_account_name = "builder"
    wep.spec.allow_spoofed_source_prefixes.append("10.9.8.7/16")
    wep.spec.qos_controls.CopyFrom(QoSControls(ingress_bandwidth=10**6, ingress_burst=10**6, dscp="EF"))
    created = await client.create_endpoint(wep)
    read = await client.get_endpoint("web-1")
    assert read == created
    assert dict(read.metadata.annotations) == {"example.com/owner": "net team"}
    assert read.spec.service_account_name == "builder"
    assert list(read.spec.allow_spoofed_source_prefixes) == ["10.9.0.0/16"]
    assert read.spec.qos_controls == QoSControls(ingress_bandwidth=10**6, ingress_burst=10**6, dscp="EF")


async def test_bad_current_v3_fields_are_each_a_field_violation(client: Client) -> None:
    wep = endpoint("web-1")
    wep.metadata.annotations["bad key"] = ""
    wep.spec.service_account_name = "Builder"
    wep.spec.allow_spoofed_source_prefixes.append("10.0.0.0/40")
    wep.spec.qos_controls.CopyFrom(QoSControls(ingress_burst=10**6, dscp="XX"))
    with pytest.raises(InvalidArgument) as raised:
        await client.create_endpoint(wep)
    assert [v.field for v in raised.value.violations] == [
        'metadata.annotations["bad key"]',
        "spec.allowSpoofedSourcePrefixes[0]",
        "spec.serviceAccountName",
        "spec.qosControls.ingressBurst",
        "spec.qosControls.dscp",
    ]
    assert [e async for e in client.list_endpoints(namespace="")] == []
