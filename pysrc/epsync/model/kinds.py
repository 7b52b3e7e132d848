"""The resource kinds: each one's message type, key, validation (in the Rust core) and stored bytes.

The store sees kinds, keys and opaque bytes; this module is the only place that knows how a
WorkloadEndpoint or a Profile becomes a key and a value, and back. `resource_version` is
never stored inside the value: it is the record's mod revision, stamped on decode, exactly
as etcd-backed Kubernetes objects work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from epsync._core import normalize_endpoints, normalize_profiles, undecodable
from epsync.model.naming import derived_name
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

__all__ = [
    "DEFAULT_NAMESPACE",
    "NAMESPACE_LABEL",
    "ORCHESTRATOR_LABEL",
    "PROFILES",
    "RESOURCE_TYPES",
    "WORKLOAD_ENDPOINTS",
    "Kind",
    "NormalizeItem",
    "Normalized",
    "Resource",
    "ResourceType",
    "endpoint_key",
    "split_endpoint_key",
]


DEFAULT_NAMESPACE = "default"
# The most known resource versions one watch request may carry (the protos document it). Reading
# the map and computing the difference runs on the server's event loop, about 3 ms per 1,000
# entries (bench/bench_stall.py): 10,000 hold other clients up for some 30 ms, no more.
MAX_KNOWN_VERSIONS = 10_000
# Set by the server on every stored endpoint, as Calico does, so that policy can select on them.
NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"


class Kind(enum.StrEnum):
    """A kind of resource, by the name the datastores keep it under."""

    WORKLOAD_ENDPOINT = "workloadendpoints"
    PROFILE = "profiles"


Resource = WorkloadEndpoint | Profile
R = TypeVar("R", WorkloadEndpoint, Profile)

# One write to normalise: the request's encoded object, and the uid and creation timestamp (seconds,
# nanos) to give it, or None to leave them as they are; or the request's encoded object and the stored
# object (its bytes) whose uid and creation timestamp it keeps, read in the Rust core.
NormalizeItem = tuple[bytes, str | None, tuple[int, int] | None] | tuple[bytes, bytes]
# Per item, the stored bytes, or the (field path, description) of every violation.
Normalized = bytes | list[tuple[str, str]]


def endpoint_key(namespace: str, name: str) -> str:
    return f"{namespace or DEFAULT_NAMESPACE}/{name}"


def split_endpoint_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


@dataclass(frozen=True, slots=True)
class ResourceType(Generic[R]):
    """Everything the generic write path needs to know about one kind."""

    kind: Kind
    message: type[R]
    display_name: str
    # Validation and normalisation of a batch, in the Rust core (SPEC §3): one call for many writes.
    normalize_batch: Callable[[Sequence[NormalizeItem]], list[Normalized]]
    namespaced: bool

    def key_of(self, obj: R) -> str:
        if self.namespaced:
            return endpoint_key(obj.metadata.namespace, obj.metadata.name)
        return obj.metadata.name

    def request_key(self, obj: R) -> str | None:
        """The key a write of `obj` has if it is valid, known before validation (a missing endpoint name is
        the derived one); None when no valid write could have it (no name, nothing to derive one from)."""
        if not self.namespaced:
            return obj.metadata.name or None
        assert isinstance(obj, WorkloadEndpoint)
        name = obj.metadata.name or derived_name(obj.spec)
        return endpoint_key(obj.metadata.namespace, name) if name else None

    def describe(self, key: str) -> str:
        """A human name for error messages: `WorkloadEndpoint "default/web-1"`."""
        return f'{self.display_name} "{key}"'

    def encode(self, obj: R) -> bytes:
        """Stored bytes: the object without its resource_version (the store's mod revision is the truth)."""
        stored = self.message()
        stored.CopyFrom(obj)
        stored.metadata.resource_version = 0
        return stored.SerializeToString(deterministic=True)

    def decode(self, value: bytes, mod_revision: int) -> R:
        obj = self.message.FromString(value)
        obj.metadata.resource_version = mod_revision
        return obj

    def undecodable(self, values: Sequence[bytes | None]) -> list[int]:
        """The indexes of the stored `values` that do not decode as this kind's message (None, a deletion,
        always does): the one rule for values written by something other than epsync, or damaged, checked
        in the Rust core (about a microsecond a value)."""
        return undecodable(self.message.DESCRIPTOR.name, values)


WORKLOAD_ENDPOINTS: ResourceType[WorkloadEndpoint] = ResourceType(
    kind=Kind.WORKLOAD_ENDPOINT,
    message=WorkloadEndpoint,
    display_name="WorkloadEndpoint",
    normalize_batch=normalize_endpoints,
    namespaced=True,
)

PROFILES: ResourceType[Profile] = ResourceType(
    kind=Kind.PROFILE,
    message=Profile,
    display_name="Profile",
    normalize_batch=normalize_profiles,
    namespaced=False,
)

# Each kind's ResourceType, for code that has a kind (a stored record or change) and needs its message.
RESOURCE_TYPES: dict[Kind, ResourceType[WorkloadEndpoint] | ResourceType[Profile]] = {
    Kind.WORKLOAD_ENDPOINT: WORKLOAD_ENDPOINTS,
    Kind.PROFILE: PROFILES,
}
