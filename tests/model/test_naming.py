"""Calico's derived WorkloadEndpoint names (libcalico-go names/workloadendpoint.go)."""

from __future__ import annotations

import pytest

from epsync.model.naming import derived_name, escape_part, name_parts
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpointSpec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            WorkloadEndpointSpec(node="node1", orchestrator="k8s", pod="my-nginx-b1337a", endpoint="eth0"),
            "node1-k8s-my--nginx--b1337a-eth0",
            id="k8s-uses-pod",
        ),
        pytest.param(
            WorkloadEndpointSpec(node="node1", orchestrator="cni", container_id="abc-123", endpoint="eth0"),
            "node1-cni-abc--123-eth0",
            id="cni-uses-container-id",
        ),
        pytest.param(
            WorkloadEndpointSpec(node="node1", orchestrator="openstack", workload="vm-1", endpoint="tap0"),
            "node1-openstack-vm--1-tap0",
            id="other-uses-workload",
        ),
        pytest.param(
            WorkloadEndpointSpec(node="node1", orchestrator="libnetwork", endpoint="ep-1"),
            "node1-libnetwork-libnetwork-ep--1",
            id="libnetwork-repeats-orchestrator",
        ),
        pytest.param(
            WorkloadEndpointSpec(node="rack-1.host-2", orchestrator="k8s", pod="p", endpoint="eth-0"),
            "rack--1.host--2-k8s-p-eth--0",
            id="dashes-doubled-in-every-part",
        ),
        pytest.param(
            # The other orchestrators' workload fields play no part in a k8s name.
            WorkloadEndpointSpec(node="n", orchestrator="k8s", pod="p", endpoint="e", workload="w", container_id="c"),
            "n-k8s-p-e",
            id="k8s-ignores-workload-and-container-id",
        ),
    ],
)
def test_derived_name(spec: WorkloadEndpointSpec, expected: str) -> None:
    assert derived_name(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(WorkloadEndpointSpec(orchestrator="k8s", pod="p", endpoint="e"), id="no-node"),
        pytest.param(WorkloadEndpointSpec(node="n", pod="p", endpoint="e"), id="no-orchestrator"),
        pytest.param(WorkloadEndpointSpec(node="n", orchestrator="k8s", endpoint="e"), id="k8s-without-pod"),
        pytest.param(
            WorkloadEndpointSpec(node="n", orchestrator="k8s", workload="w", endpoint="e"), id="k8s-workload-not-pod"
        ),
        pytest.param(
            WorkloadEndpointSpec(node="n", orchestrator="cni", pod="p", endpoint="e"), id="cni-without-container-id"
        ),
        pytest.param(WorkloadEndpointSpec(node="n", orchestrator="openstack", endpoint="e"), id="other-no-workload"),
        pytest.param(WorkloadEndpointSpec(node="n", orchestrator="k8s", pod="p"), id="no-endpoint"),
    ],
)
def test_derived_name_is_none_unless_every_part_is_set(spec: WorkloadEndpointSpec) -> None:
    assert derived_name(spec) is None


def test_name_parts_name_the_spec_fields() -> None:
    spec = WorkloadEndpointSpec(node="n", orchestrator="cni", container_id="c", endpoint="e")
    assert [(p.field, p.value) for p in name_parts(spec)] == [
        ("node", "n"),
        ("orchestrator", "cni"),
        ("containerID", "c"),
        ("endpoint", "e"),
    ]


def test_escape_part_doubles_each_dash() -> None:
    assert escape_part("a-b--c") == "a--b----c"
    assert escape_part("abc") == "abc"
