"""A synthetic but Kubernetes-shaped cluster for benchmarks: namespaces with profiles, pods on nodes.

Every endpoint is what the Calico CNI plugin would write: a derived name, the namespace and
service-account profiles, pod labels of a few deployments. Seeded, so runs are comparable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec

APPS = ("web", "api", "db", "cache", "worker", "auth", "search", "billing", "queue", "ingest")
TIERS = ("frontend", "backend", "data")


@dataclass(frozen=True, slots=True)
class Cluster:
    profiles: list[Profile]
    endpoints: list[WorkloadEndpoint]


def cluster(endpoints: int, *, namespaces: int = 100, nodes: int = 500, seed: int = 1) -> Cluster:
    rng = random.Random(seed)
    profiles = [_profile(name, labels) for name, labels in namespace_profiles(namespaces)]
    pods = [endpoint_for(i, rng, namespaces=namespaces, nodes=nodes) for i in range(endpoints)]
    return Cluster(profiles, pods)


def namespace_profiles(namespaces: int) -> list[tuple[str, dict[str, str]]]:
    """`(name, labels_to_apply)` of the namespace (`kns.`) and default service-account (`ksa.`) profiles."""
    profiles: list[tuple[str, dict[str, str]]] = []
    for n in range(namespaces):
        ns = f"ns-{n}"
        env = "prod" if n % 2 == 0 else "dev"
        profiles.append((f"kns.{ns}", {"projectcalico.org/name": ns, "env": env}))
        profiles.append((f"ksa.{ns}.default", {"projectcalico.org/serviceaccount": "default"}))
    return profiles


def pod_labels(i: int, rng: random.Random) -> dict[str, str]:
    """The labels of pod `i`: its deployment's app, a tier, a template hash and a versioned name."""
    app = APPS[i % len(APPS)]
    return {
        "app": app,
        "tier": rng.choice(TIERS),
        "pod-template-hash": f"{rng.getrandbits(32):08x}",
        "app.kubernetes.io/name": f"{app}-{i % 37}",
    }


def endpoint_for(i: int, rng: random.Random, *, namespaces: int, nodes: int) -> WorkloadEndpoint:
    ns = f"ns-{i % namespaces}"
    app = APPS[i % len(APPS)]
    octets = (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF
    return WorkloadEndpoint(
        metadata=ObjectMeta(namespace=ns, labels=pod_labels(i, rng)),
        spec=WorkloadEndpointSpec(
            orchestrator="k8s",
            node=f"node-{i % nodes}",
            pod=f"{app}-{i:06d}",
            endpoint="eth0",
            container_id=f"{rng.getrandbits(64):016x}",
            ip_networks=[f"10.{octets[0]}.{octets[1]}.{octets[2]}/32"],
            interface_name=f"cali{i:011x}"[:15],
            profiles=[f"kns.{ns}", f"ksa.{ns}.default"],
            ports=[WorkloadEndpointPort(name="http", protocol="TCP", port=8080)],
        ),
    )


def _profile(name: str, labels: dict[str, str]) -> Profile:
    return Profile(metadata=ObjectMeta(name=name), spec=ProfileSpec(labels_to_apply=labels))
