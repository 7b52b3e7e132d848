"""The generic write path: create, update and delete for every kind, with optimistic concurrency.

Each operation reads the current object from the cache, checks the client's preconditions,
and writes with a compare-and-swap on the mod revision it read (the same shape as Kubernetes'
GuaranteedUpdate over etcd). If the swap loses a race the operation retries against the
winner's record, which the conflict hands back, unless the client pinned a resource_version, in
which case losing the race is the client's ABORTED. Every round of a race commits at least one
writer, so n concurrent writers to one key all land within n rounds; a time budget, not an
attempt count, bounds the loop. Server-owned metadata (uid, creation_timestamp) is set on create and carried over on
every update, so identity never changes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from epsync.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from epsync.model.kinds import PROFILES, WORKLOAD_ENDPOINTS, ResourceType
from epsync.store.base import Committed, Conflict, Datastore, Delete, Put, Record
from epsync.sync.cache import ResourceCache
from epsync.v1.profile_pb2 import Profile
from epsync.v1.workload_endpoint_pb2 import WorkloadEndpoint

R = TypeVar("R", WorkloadEndpoint, Profile)

# How long one write may keep losing compare-and-swap races before it gives up with ABORTED.
_RETRY_BUDGET_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Deleted(Generic[R]):
    object: R | None  # the object as it was; None when allow_missing found nothing
    revision: int


class Registry(Generic[R]):
    """Writes for one kind; reads the current state from the cache, writes through the datastore."""

    def __init__(self, rtype: ResourceType[R], store: Datastore, cache: ResourceCache) -> None:
        self.rtype: ResourceType[R] = rtype
        self._store = store
        self._cache = cache

    def current(self, key: str) -> R | None:
        return self._cache.get(self.rtype, key)

    def get(self, key: str) -> R:
        obj = self.current(key)
        if obj is None:
            raise NotFound(f"{self.rtype.describe(key)} not found")
        return obj

    async def create(self, obj: R) -> R:
        creation = self._creation(obj)
        result = await self._write_one(creation)
        if isinstance(result, Conflict):
            raise AlreadyExists(f"{self.rtype.describe(creation.key)} already exists")
        return self._decoded(result)

    def _creation(self, obj: R) -> Put:
        """The write that creates `obj`, with its server-owned identity, if its key is free."""
        new = self.rtype.normalize(obj)
        new.metadata.uid = str(uuid.uuid4())
        new.metadata.creation_timestamp.CopyFrom(_now())
        return Put(self.rtype.kind, self.rtype.key_of(new), self.rtype.encode(new), expected_mod_revision=0)

    async def update(self, obj: R, *, allow_missing: bool = False) -> R:
        new = self.rtype.normalize(obj)
        key = self.rtype.key_of(new)
        precondition = new.metadata.resource_version
        if precondition < 0:
            raise InvalidArgument([FieldViolation("metadata.resource_version", "must not be negative")])
        current = self.current(key)
        deadline = time.monotonic() + _RETRY_BUDGET_SECONDS
        while time.monotonic() < deadline:
            if current is None:
                if not allow_missing:
                    raise NotFound(f"{self.rtype.describe(key)} not found (set allow_missing to create it)")
                if precondition:
                    raise Aborted(
                        f"{self.rtype.describe(key)} does not exist, so it cannot be at resource_version {precondition}"
                    )
                created = await self._write_one(self._creation(obj))
                if isinstance(created, Committed):
                    return self._decoded(created)
                # Created meanwhile, maybe before this replica's cache heard of it: update the winner.
                current = self._winner(created)
                continue
            if precondition and precondition != current.metadata.resource_version:
                raise _version_mismatch(self.rtype, key, precondition, current.metadata.resource_version)
            new.metadata.uid = current.metadata.uid
            new.metadata.creation_timestamp.CopyFrom(current.metadata.creation_timestamp)
            expected = current.metadata.resource_version
            result = await self._write_one(Put(self.rtype.kind, key, self.rtype.encode(new), expected))
            if isinstance(result, Committed):
                return self._decoded(result)
            if precondition:
                raise _version_mismatch(self.rtype, key, precondition, _revision_of(result.current))
            current = self._winner(result)
        raise Aborted(f"{self.rtype.describe(key)} is changing too fast to update; retry")

    async def delete(
        self, key: str, *, resource_version: int = 0, uid: str = "", allow_missing: bool = False
    ) -> Deleted[R]:
        current = self.current(key)
        deadline = time.monotonic() + _RETRY_BUDGET_SECONDS
        while time.monotonic() < deadline:
            if current is None:
                if not allow_missing or resource_version or uid:
                    raise NotFound(f"{self.rtype.describe(key)} not found")
                # The cache may not have heard of the object yet (another replica just created it):
                # the store, not the cache, says whether there is nothing to delete.
                result = await self._write_one(Delete(self.rtype.kind, key))
                if isinstance(result, Committed):
                    return Deleted(self._previous(result), result.revision)
                return Deleted(None, self._cache.revision)
            if resource_version and resource_version != current.metadata.resource_version:
                raise _version_mismatch(self.rtype, key, resource_version, current.metadata.resource_version)
            if uid and uid != current.metadata.uid:
                raise Aborted(
                    f"{self.rtype.describe(key)} has uid {current.metadata.uid}, not {uid}: "
                    "it was deleted and created again"
                )
            result = await self._write_one(Delete(self.rtype.kind, key, current.metadata.resource_version))
            if isinstance(result, Committed):
                return Deleted(current, result.revision)
            if resource_version:
                raise _version_mismatch(self.rtype, key, resource_version, _revision_of(result.current))
            current = self._winner(result)
        raise Aborted(f"{self.rtype.describe(key)} is changing too fast to delete; retry")

    async def _write_one(self, write: Put | Delete) -> Committed | Conflict:
        (result,) = await self._store.write([write])
        return result

    def _winner(self, conflict: Conflict) -> R | None:
        """What won the race: the conflict carries the stored record, fresher than the cache may yet be."""
        return _decoded(self.rtype, conflict.current) if conflict.current is not None else None

    def _previous(self, result: Committed) -> R | None:
        return _decoded(self.rtype, result.previous) if result.previous is not None else None

    def _decoded(self, result: Committed) -> R:
        assert result.record is not None, "a committed put always has a record"
        return _decoded(self.rtype, result.record)


def _decoded(rtype: ResourceType[R], record: Record) -> R:
    return rtype.decode(record.value, record.mod_revision)


def _revision_of(record: Record | None) -> int:
    return record.mod_revision if record is not None else 0


def _version_mismatch(rtype: ResourceType[R], key: str, expected: int, actual: int) -> Aborted:
    state = f"is at resource_version {actual}" if actual else "no longer exists"
    return Aborted(f"{rtype.describe(key)} {state}, not {expected}: re-read it and retry")


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def endpoint_registry(store: Datastore, cache: ResourceCache) -> Registry[WorkloadEndpoint]:
    return Registry(WORKLOAD_ENDPOINTS, store, cache)


def profile_registry(store: Datastore, cache: ResourceCache) -> Registry[Profile]:
    return Registry(PROFILES, store, cache)
