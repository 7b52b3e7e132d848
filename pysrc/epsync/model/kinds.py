"""The resource kinds: each one's message type, key, validation and stored bytes.

The store sees kinds, keys and opaque bytes; this module is the only place that knows how a
WorkloadEndpoint or a Profile becomes a key and a value, and back. `resource_version` is
never stored inside the value: it is the record's mod revision, stamped on decode, exactly
as etcd-backed Kubernetes objects work.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from epsync.model.validation import DEFAULT_NAMESPACE, normalize_profile, normalize_workload_endpoint
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

__all__ = [
    "DEFAULT_NAMESPACE",
    "PROFILES",
    "WORKLOAD_ENDPOINTS",
    "Kind",
    "Resource",
    "ResourceType",
    "endpoint_key",
    "split_endpoint_key",
]


class Kind(enum.StrEnum):
    """A kind of resource, by the name the datastores keep it under."""

    WORKLOAD_ENDPOINT = "workloadendpoints"
    PROFILE = "profiles"


Resource = WorkloadEndpoint | Profile
R = TypeVar("R", WorkloadEndpoint, Profile)


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
    normalize: Callable[[R], R]
    namespaced: bool

    def key_of(self, obj: R) -> str:
        if self.namespaced:
            return endpoint_key(obj.metadata.namespace, obj.metadata.name)
        return obj.metadata.name

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


WORKLOAD_ENDPOINTS: ResourceType[WorkloadEndpoint] = ResourceType(
    kind=Kind.WORKLOAD_ENDPOINT,
    message=WorkloadEndpoint,
    display_name="WorkloadEndpoint",
    normalize=normalize_workload_endpoint,
    namespaced=True,
)

PROFILES: ResourceType[Profile] = ResourceType(
    kind=Kind.PROFILE,
    message=Profile,
    display_name="Profile",
    normalize=normalize_profile,
    namespaced=False,
)
