"""Calico's derived WorkloadEndpoint name, as libcalico-go `names/workloadendpoint.go` builds it.

A WorkloadEndpoint's name encodes where it lives: `<node>-<orchestrator>-<workload part>-<endpoint>`, each
part with its own dashes doubled so that the single dashes between parts stay unambiguous
(`node1-k8s-my--nginx--b1337a-eth0`). Which spec field is the workload part depends on the orchestrator.
"""

from __future__ import annotations

from typing import NamedTuple

from epsync.v1.workload_endpoint_pb2 import WorkloadEndpointSpec


class NamePart(NamedTuple):
    """One segment of a derived name: the spec field it comes from (JSON name) and its value."""

    field: str
    value: str


def workload_part(spec: WorkloadEndpointSpec) -> NamePart:
    """The spec field that identifies the workload for this orchestrator (Calico's `getSegments`)."""
    if spec.orchestrator == "k8s":
        return NamePart("pod", spec.pod)
    if spec.orchestrator == "cni":
        return NamePart("containerID", spec.container_id)
    if spec.orchestrator == "libnetwork":
        # Docker's libnetwork has no workload name: Calico repeats the orchestrator in its place.
        return NamePart("orchestrator", spec.orchestrator)
    return NamePart("workload", spec.workload)


def name_parts(spec: WorkloadEndpointSpec) -> list[NamePart]:
    """The four segments the derived name is built from, in name order (values may be empty)."""
    return [
        NamePart("node", spec.node),
        NamePart("orchestrator", spec.orchestrator),
        workload_part(spec),
        NamePart("endpoint", spec.endpoint),
    ]


def escape_part(value: str) -> str:
    """Double every dash so a part's dashes cannot be mistaken for the separators between parts."""
    return value.replace("-", "--")


def derived_name(spec: WorkloadEndpointSpec) -> str | None:
    """Calico's name for an endpoint with this spec, or None unless every part of the name is set."""
    parts = name_parts(spec)
    if not all(part.value for part in parts):
        return None
    return "-".join(escape_part(part.value) for part in parts)
