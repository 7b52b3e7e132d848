"""Builders for valid test resources, so each test states only what it is about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec


def endpoint(
    name: str,
    *,
    namespace: str = "default",
    node: str = "node1",
    labels: Mapping[str, str] | None = None,
    profiles: Sequence[str] = (),
    ip: str = "10.0.0.1",
    ports: Sequence[WorkloadEndpointPort] = (),
) -> WorkloadEndpoint:
    """A valid endpoint whose name is not derived (no orchestrator), so node may change freely."""
    return WorkloadEndpoint(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=dict(labels or {})),
        spec=WorkloadEndpointSpec(
            node=node,
            workload=name,
            endpoint="eth0",
            ip_networks=[f"{ip}/32"],
            interface_name="cali0",
            profiles=list(profiles),
            ports=list(ports),
        ),
    )


def k8s_endpoint(node: str, pod: str, *, namespace: str = "default", iface: str = "eth0") -> WorkloadEndpoint:
    """An orchestrator-created endpoint whose name Calico derives from node, pod and interface."""
    return WorkloadEndpoint(
        metadata=ObjectMeta(namespace=namespace),
        spec=WorkloadEndpointSpec(
            node=node, orchestrator="k8s", pod=pod, endpoint=iface, ip_networks=["10.1.0.1/32"], interface_name="cali1"
        ),
    )


def profile(name: str, labels_to_apply: Mapping[str, str] | None = None) -> Profile:
    return Profile(metadata=ObjectMeta(name=name), spec=ProfileSpec(labels_to_apply=dict(labels_to_apply or {})))
