"""Where epsync's data lives in etcd: which etcd, which prefix, and the key of each object.

Layout: `<prefix>workloadendpoints/<namespace>/<name>` and `<prefix>profiles/<name>`, the values the
opaque bytes the layer above hands in. Keys under the prefix that name no kind are not epsync's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from epsync.store.base import KIND_OF_VALUE, Kind
from epsync.store.etcd.client import EtcdError, prefix_range_end


@dataclass(frozen=True)
class Keyspace:
    """epsync's keys under `prefix` in the etcd at `where` (its endpoints, as messages name it)."""

    where: str
    prefix: str
    raw_prefix: bytes = field(init=False)
    range_end: bytes = field(init=False)  # [raw_prefix, range_end) is every key under the prefix

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or not self.prefix.endswith("/"):
            raise ValueError(f"the etcd prefix must start and end with '/', not {self.prefix!r}")
        object.__setattr__(self, "raw_prefix", self.prefix.encode())
        object.__setattr__(self, "range_end", prefix_range_end(self.raw_prefix))

    def key(self, kind: Kind, name: str) -> bytes:
        return self.raw_prefix + f"{kind.value}/{name}".encode()

    def parse(self, raw: bytes) -> tuple[Kind, str] | None:
        """(kind, name) of an etcd key, or None for a key that is not one of epsync's objects."""
        if not raw.startswith(self.raw_prefix):
            return None
        kind_name, slash, name = raw[len(self.raw_prefix) :].decode(errors="replace").partition("/")
        kind = KIND_OF_VALUE.get(kind_name)
        if kind is None or not slash or not name:
            return None
        return kind, name

    def unavailable(self, error: EtcdError) -> str:
        """The message for a call that failed because etcd could not be reached."""
        return f"etcd at {self.where} is unavailable: {error.details or error}"
