"""The in-memory view every read is served from, fed by the datastore's change feed.

Like Kubernetes' watch cache or Calico's Typha, the server keeps every object decoded in
memory, bootstrapped from one consistent snapshot and then advanced by each committed batch
of changes (after it is durable). Endpoint filtering (namespace, node, selectors over labels
inherited from profiles) is delegated to the Rust `EndpointIndex`, so a filtered List costs
one call into Rust for a whole page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from sortedcontainers import SortedDict

from epsync._core import EndpointIndex, Selector
from epsync.errors import Unavailable
from epsync.resources import PROFILES, WORKLOAD_ENDPOINTS, ResourceType, endpoint_key, split_endpoint_key
from epsync.store.base import Change, Kind, Snapshot
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

# Profiles are matched against selectors in chunks: one call into Rust per chunk, not per profile.
_PROFILE_CHUNK = 512


T = TypeVar("T")
R = TypeVar("R", WorkloadEndpoint, Profile)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    more: bool


def _index_entry(wep: WorkloadEndpoint) -> tuple[str, str, str, dict[str, str], list[str], int]:
    meta = wep.metadata
    return (meta.namespace, meta.name, wep.spec.node, dict(meta.labels), list(wep.spec.profiles), meta.resource_version)


class ResourceCache:
    """Decoded objects of every kind at one revision, plus the endpoint label index."""

    def __init__(self) -> None:
        self.revision = 0
        self._endpoints: dict[str, WorkloadEndpoint] = {}
        self._profiles: SortedDict = SortedDict()
        self._index = EndpointIndex()
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def load(self, snapshot: Snapshot) -> None:
        """Start from a consistent snapshot; every later batch must come through `apply`."""
        endpoints: list[WorkloadEndpoint] = []
        profiles: list[Profile] = []
        for record in snapshot.records:
            if record.kind is Kind.WORKLOAD_ENDPOINT:
                endpoints.append(WORKLOAD_ENDPOINTS.decode_record(record))
            else:
                profiles.append(PROFILES.decode_record(record))
        self._endpoints = {endpoint_key(e.metadata.namespace, e.metadata.name): e for e in endpoints}
        self._profiles = SortedDict({p.metadata.name: p for p in profiles})
        self._index = EndpointIndex()
        self._index.upsert_profiles([(p.metadata.name, dict(p.spec.labels_to_apply)) for p in profiles])
        self._index.upsert_endpoints([_index_entry(e) for e in endpoints])
        self.revision = snapshot.revision

    def apply(self, changes: Sequence[Change]) -> None:
        """Advance by one committed batch. Index updates are coalesced to each key's final state."""
        # A batch the loaded snapshot already contains (it raced start-up) must not be applied twice.
        changes = [c for c in changes if c.revision > self.revision]
        if not changes:
            return
        touched_endpoints: set[str] = set()
        touched_profiles: set[str] = set()
        for change in changes:
            if change.kind is Kind.WORKLOAD_ENDPOINT:
                touched_endpoints.add(change.key)
                if change.value is None:
                    self._endpoints.pop(change.key, None)
                else:
                    self._endpoints[change.key] = WORKLOAD_ENDPOINTS.decode(change.value, change.revision)
            else:
                touched_profiles.add(change.key)
                if change.value is None:
                    self._profiles.pop(change.key, None)
                else:
                    self._profiles[change.key] = PROFILES.decode(change.value, change.revision)
        self._update_index(touched_endpoints, touched_profiles)
        self.revision = max(self.revision, changes[-1].revision)
        self._notify_revision()

    def _update_index(self, endpoint_keys: set[str], profile_names: set[str]) -> None:
        present_profiles = [self._profiles[n] for n in profile_names if n in self._profiles]
        gone_profiles = [n for n in profile_names if n not in self._profiles]
        if present_profiles:
            self._index.upsert_profiles([(p.metadata.name, dict(p.spec.labels_to_apply)) for p in present_profiles])
        if gone_profiles:
            self._index.remove_profiles(gone_profiles)
        present = [self._endpoints[k] for k in endpoint_keys if k in self._endpoints]
        gone = [split_endpoint_key(k) for k in endpoint_keys if k not in self._endpoints]
        if present:
            self._index.upsert_endpoints([_index_entry(e) for e in present])
        if gone:
            self._index.remove_endpoints(gone)

    def _notify_revision(self) -> None:
        still_waiting = []
        for revision, waiter in self._waiters:
            if waiter.done():  # its caller timed out
                continue
            if revision <= self.revision:
                waiter.set_result(None)
            else:
                still_waiting.append((revision, waiter))
        self._waiters = still_waiting

    async def wait_for_revision(self, revision: int, within_seconds: float) -> None:
        """Return once the cache has reached `revision`, or raise UNAVAILABLE after `within_seconds`."""
        if self.revision >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, waiter))
        try:
            await asyncio.wait_for(waiter, within_seconds)
        except TimeoutError:
            raise Unavailable(
                f"this server is at revision {self.revision} and did not reach {revision} within {within_seconds:g}s; "
                "retry, or ask another replica"
            ) from None

    def get(self, rtype: ResourceType[R], key: str) -> R | None:
        """The cached object of `rtype` under `key`, for code that is generic over kinds."""
        objects = self._endpoints if rtype.kind is Kind.WORKLOAD_ENDPOINT else self._profiles
        return cast("R | None", objects.get(key))

    def get_endpoint(self, key: str) -> WorkloadEndpoint | None:
        return self._endpoints.get(key)

    def get_profile(self, name: str) -> Profile | None:
        return self._profiles.get(name)  # type: ignore[no-any-return]

    def endpoint_count(self) -> int:
        return len(self._endpoints)

    def list_endpoints(
        self,
        *,
        namespace: str,
        node: str,
        selector: Selector | None,
        after: tuple[str, str] | None,
        limit: int,
    ) -> Page[WorkloadEndpoint]:
        keys = self._index.query(namespace, node, selector, after, limit + 1)
        items = [self._endpoints[endpoint_key(ns, name)] for ns, name in keys[:limit]]
        return Page(items, more=len(keys) > limit)

    def list_profiles(self, *, selector: Selector | None, after: str | None, limit: int) -> Page[Profile]:
        names = self._profiles.irange(minimum=after, inclusive=(False, True)) if after else iter(self._profiles)
        items: list[Profile] = []
        for chunk in _chunks(names, _PROFILE_CHUNK):
            profiles = [self._profiles[n] for n in chunk]
            if selector is not None and not selector.is_all:
                matching = selector.select([dict(p.metadata.labels) for p in profiles])
                profiles = [profiles[i] for i in matching]
            items.extend(profiles)
            if len(items) > limit:
                return Page(items[:limit], more=True)
        return Page(items, more=False)


def _chunks(names: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
