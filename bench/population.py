"""The synthetic cluster every benchmark builds: nodes, endpoints, profiles and selectors.

One generator for the load test and the micro-benchmarks alike, so every figure is measured on
the same kind of object. Everything is a pure function of a `Shape` and an index, so the load
test's orchestrator, writer, watcher agents and raw gRPC server each rebuild exactly the same
cluster without shipping it between processes. Endpoint `j` lives on node `j // per_node`; its
labels, namespace and addresses come from a generator seeded with (seed, j), so they do not
correlate with the node. A micro-benchmark with a topology of its own (`bench_fanout`'s nodes and
shared profile) takes the endpoints' traits and labels from here and places them itself.

An endpoint is what the Calico CNI plugin writes for a Kubernetes pod, sized like a real one
(about 600 bytes as stored, with the labels and uid the server adds). The load test's write path
changes only `spec.containerID` (a CNI re-ADD does exactly that), and the first 16 hex digits of
that ID are the writer's clock (`time.time_ns()`) when it sent the write: every receiver computes
its latency from the object alone, for epsync, etcd and the raw gRPC server alike, without touching
the label index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

from epsync.model.kinds import NAMESPACE_LABEL, ORCHESTRATOR_LABEL
from epsync.model.naming import derived_name, escape_part
from epsync.v1.object_meta_pb2 import ObjectMeta
from epsync.v1.profile_pb2 import Profile, ProfileSpec
from epsync.v1.workload_endpoint_pb2 import IPNAT, WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec

APPS = ("web", "api", "db", "cache", "worker", "auth", "search", "billing", "queue", "ingest")
TIERS = ("frontend", "backend", "data")
VERSIONS = ("v1", "v2", "v3")
# etcd keys: one prefix per node, so a node agent watches exactly its own endpoints.
ETCD_PREFIX = "/epsync-bench/weps/"


@dataclass(frozen=True, slots=True)
class Shape:
    """The size of the synthetic cluster: `nodes` x `per_node` endpoints, `selectors` selector watchers."""

    nodes: int
    per_node: int
    namespaces: int = 100
    seed: int = 1

    @property
    def endpoints(self) -> int:
        return self.nodes * self.per_node


def node_name(node: int) -> str:
    return f"node-{node:05d}"


def namespace_name(index: int) -> str:
    return f"ns-{index}"


def node_of(j: int, shape: Shape) -> int:
    return j // shape.per_node


@dataclass(frozen=True, slots=True)
class Traits:
    """What varies between endpoints, drawn once per endpoint index."""

    namespace: str
    app: str
    tier: str
    version: str
    canary: bool
    template_hash: str
    pod: str


def traits(j: int, shape: Shape) -> Traits:
    rng = random.Random(shape.seed * 1_000_003 + j)
    namespace = namespace_name(rng.randrange(shape.namespaces))
    app = rng.choice(APPS)
    template_hash = f"{rng.getrandbits(40):010x}"[:10]
    suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
    return Traits(
        namespace=namespace,
        app=app,
        tier=rng.choice(TIERS),
        version=rng.choice(VERSIONS),
        canary=rng.random() < 0.05,
        template_hash=template_hash,
        pod=f"{app}-{template_hash}-{suffix}",
    )


def own_labels(t: Traits) -> dict[str, str]:
    labels = {
        "app": t.app,
        "tier": t.tier,
        "version": t.version,
        "pod-template-hash": t.template_hash,
        "app.kubernetes.io/name": t.app,
        "app.kubernetes.io/instance": f"{t.app}-{t.namespace}",
        "app.kubernetes.io/managed-by": "helm",
    }
    if t.canary:
        labels["canary"] = "true"
    return labels


def container_id(sent_ns: int, j: int, generation: int = 0) -> str:
    """A 64-hex-digit container ID whose first 16 digits are `sent_ns`."""
    return f"{sent_ns & 0xFFFF_FFFF_FFFF_FFFF:016x}{j:016x}{generation:016x}{(j * 2654435761) & 0xFFFF_FFFF:016x}"


def sent_ns_of(cid: str) -> int:
    """The send time stamped into a container ID by `container_id` (0 if it carries none)."""
    try:
        return int(cid[:16], 16)
    except ValueError:
        return 0


def endpoint(j: int, shape: Shape, *, sent_ns: int = 0, generation: int = 0) -> WorkloadEndpoint:
    """Endpoint `j` as a writer sends it (the server adds its uid, timestamp and two labels)."""
    t = traits(j, shape)
    octets = (j >> 16) & 0xFF, (j >> 8) & 0xFF, j & 0xFF
    ipv4 = f"10.{octets[0]}.{octets[1]}.{octets[2]}"
    spec = WorkloadEndpointSpec(
        orchestrator="k8s",
        node=node_name(node_of(j, shape)),
        container_id=container_id(sent_ns, j, generation),
        pod=t.pod,
        endpoint="eth0",
        ip_networks=[f"{ipv4}/32", f"fd00:10:{octets[0]:x}:{octets[1]:x}::{octets[2]:x}/128"],
        ip_nats=[IPNAT(internal_ip=ipv4, external_ip=f"172.16.{octets[1]}.{octets[2]}")] if j % 10 == 0 else [],
        profiles=[f"kns.{t.namespace}", f"ksa.{t.namespace}.default"],
        interface_name=f"cali{j:011x}"[:15],
        mac=f"ee:ee:ee:{octets[0]:02x}:{octets[1]:02x}:{octets[2]:02x}",
        ports=[
            WorkloadEndpointPort(name="http", protocol="TCP", port=8080),
            WorkloadEndpointPort(name="metrics", protocol="TCP", port=9090),
        ],
    )
    wep = WorkloadEndpoint(metadata=ObjectMeta(namespace=t.namespace, labels=own_labels(t)), spec=spec)
    wep.metadata.name = derived_name(spec) or ""
    return wep


def key_of(j: int, shape: Shape) -> str:
    """ "namespace/name", the key watchers and the store use."""
    wep = endpoint(j, shape)
    return f"{wep.metadata.namespace}/{wep.metadata.name}"


def etcd_key(node: str, key: str) -> bytes:
    """The etcd key of an endpoint: under its node's prefix."""
    return f"{ETCD_PREFIX}{node}/{key}".encode()


def etcd_node_prefix(node: str) -> bytes:
    return f"{ETCD_PREFIX}{node}/".encode()


def profile_specs(shape: Shape) -> list[tuple[str, dict[str, str]]]:
    """`(name, labels_to_apply)` of the namespace (`kns.`) and default service-account (`ksa.`) profiles."""
    out: list[tuple[str, dict[str, str]]] = []
    for n in range(shape.namespaces):
        ns = namespace_name(n)
        namespace_labels, account_labels = profile_labels(ns)
        out += [(f"kns.{ns}", namespace_labels), (f"ksa.{ns}.default", account_labels)]
    return out


def profiles(shape: Shape) -> list[Profile]:
    """The profiles of `profile_specs` as the API takes them."""
    return [
        Profile(metadata=ObjectMeta(name=name), spec=ProfileSpec(labels_to_apply=labels))
        for name, labels in profile_specs(shape)
    ]


def profile_labels(namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    index = int(namespace.rsplit("-", 1)[1])
    env = ("prod", "staging", "dev")[index % 3]
    team = f"team-{index % 7}"
    return (
        {"projectcalico.org/name": namespace, "env": env, "team": team},
        {"projectcalico.org/serviceaccount": "default"},
    )


def effective_labels(j: int, shape: Shape) -> dict[str, str]:
    """The labels selectors see: profiles' labelsToApply, then the server-set labels, then the endpoint's own."""
    t = traits(j, shape)
    labels: dict[str, str] = {}
    for applied in profile_labels(t.namespace):
        labels.update(applied)
    labels[NAMESPACE_LABEL] = t.namespace
    labels[ORCHESTRATOR_LABEL] = "k8s"
    labels.update(own_labels(t))
    return labels


def selector(s: int, shape: Shape) -> str:
    """Selector watcher `s`'s selector: a policy-like mix, mostly narrow, a few broad.

    Per 20 watchers: 14 namespace-scoped app selectors (about 0.1% of endpoints each), 4 app and tier
    selectors across namespaces (about 3%), 1 environment-wide selector through an inherited label
    (about 7%), 1 team-wide selector with a negation (about 1-2%).
    """
    rng = random.Random(shape.seed * 7_919 + s)
    kind = s % 20
    app = rng.choice(APPS)
    if kind < 14:
        ns = namespace_name(rng.randrange(shape.namespaces))
        return f"{NAMESPACE_LABEL} == '{ns}' && app == '{app}'"
    if kind < 18:
        return f"app == '{app}' && tier == '{rng.choice(TIERS)}'"
    if kind == 18:
        other = rng.choice([a for a in APPS if a != app])
        return f"env == 'prod' && app in {{'{app}', '{other}'}}"
    return f"team == 'team-{rng.randrange(7)}' && tier == 'data' && !has(canary)"


@dataclass(frozen=True)
class Membership:
    """Which endpoints each selector watcher sees (labels never change under load, so this is fixed)."""

    shape: Shape
    selectors: tuple[str, ...]

    @cached_property
    def traits(self) -> list[Traits]:
        return [traits(j, self.shape) for j in range(self.shape.endpoints)]

    @cached_property
    def keys(self) -> list[str]:
        """Every endpoint's "namespace/name", by index."""
        return [
            f"{t.namespace}/{escape_part(node_name(node_of(j, self.shape)))}-k8s-{escape_part(t.pod)}-eth0"
            for j, t in enumerate(self.traits)
        ]

    @cached_property
    def selector_members(self) -> list[list[int]]:
        """For every selector watcher, the endpoint indices it matches, ascending.

        Endpoints that differ only in labels no selector of the mix reads share one evaluation: the
        Rust engine runs over each distinct (namespace, app, tier, canary) once, not 100,000 times.
        """
        from epsync._core import Selector

        classes: dict[tuple[str, str, str, bool], list[int]] = {}
        for j, t in enumerate(self.traits):
            classes.setdefault((t.namespace, t.app, t.tier, t.canary), []).append(j)
        groups = list(classes.values())
        label_sets = [effective_labels(group[0], self.shape) for group in groups]
        cache: dict[str, list[int]] = {}
        out: list[list[int]] = []
        for text in self.selectors:
            if text not in cache:
                cache[text] = sorted(j for g in Selector(text).select(label_sets) for j in groups[g])
            out.append(cache[text])
        return out

    @cached_property
    def selectors_of_endpoint(self) -> list[list[int]]:
        """For every endpoint, the selector watchers that match it."""
        out: list[list[int]] = [[] for _ in range(self.shape.endpoints)]
        for s, members in enumerate(self.selector_members):
            for j in members:
                out[j].append(s)
        return out


def membership(shape: Shape, selector_watchers: int) -> Membership:
    return Membership(shape, tuple(selector(s, shape) for s in range(selector_watchers)))
