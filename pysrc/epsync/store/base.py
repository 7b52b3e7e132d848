"""The datastore interface, in etcd v3's terms, that every backend (SQLite and etcd) implements.

The store holds opaque values (serialised protobuf) under string keys in one namespace per kind,
and gives every successful write its own revision from one global counter, like etcd's
`mod_revision`. The layer above stamps that revision on each object as its `resource_version`
when it decodes a value; the store never parses values.

Three things feed the server's in-memory cache and watchers:
- `snapshot()`: every record at one revision, to bootstrap from;
- listeners: each committed group of changes, in revision order, called synchronously once the
  group is durable and before the writers' `write()` calls return (read-your-writes through
  the cache);
- `changes_since(R)`: the retained history after R, for resuming, until it is compacted.

A consumer that registers a listener, then applies `await snapshot()` straight away (no await in
between), then applies every listener batch's changes with revision > `snapshot.revision`, holds
exactly the store's state.

Health: a backend reports whether it can take writes now through `healthy` and
`add_health_listener`: etcd while its watch is established, the embedded store while its commits
succeed (a full disk makes it unhealthy until a commit succeeds again).
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from epsync.model.kinds import Kind

__all__ = [
    "KIND_OF_VALUE",
    "Change",
    "ChangeListener",
    "Committed",
    "Conflict",
    "Datastore",
    "DatastoreError",
    "DatastoreFull",
    "DatastoreUnavailable",
    "Delete",
    "HealthListener",
    "Kind",
    "Put",
    "Record",
    "RevisionCompacted",
    "Snapshot",
    "StoreIdentity",
    "Write",
    "WriteFailed",
    "WriteResult",
    "check_write",
    "conflict_of",
]


# Kind by its stored name: a dict lookup, cheaper than `Kind(value)` for every row read.
KIND_OF_VALUE: dict[str, Kind] = {kind.value: kind for kind in Kind}


@dataclass(frozen=True, slots=True)
class Record:
    """One stored object."""

    kind: Kind
    key: str  # "<namespace>/<name>" for endpoints, "<name>" for profiles
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Put:
    """Create or replace `key`.

    `expected_mod_revision`: None, unconditional; 0, the key must not exist; n > 0, the key must
    exist with mod_revision n (compare-and-swap).
    """

    kind: Kind
    key: str
    value: bytes
    expected_mod_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `key`. `expected_mod_revision`: None, it must exist; n > 0, it must exist with mod_revision n."""

    kind: Kind
    key: str
    expected_mod_revision: int | None = None


Write = Put | Delete


@dataclass(frozen=True, slots=True)
class Committed:
    revision: int  # the revision this write was given
    record: Record | None  # the new record (None for a Delete)
    previous: Record | None  # what it replaced (None for a create)


@dataclass(frozen=True, slots=True)
class Conflict:
    """The precondition failed and nothing changed; `current` is what is stored now (None: nothing)."""

    current: Record | None


WriteResult = Committed | Conflict


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change, as the change feed and history report it (etcd watch with prev_kv)."""

    revision: int
    kind: Kind
    key: str
    value: bytes | None  # None: deleted
    previous: bytes | None  # value before this change; None for a create
    create_revision: int  # of the object as it now is (for deletes: of the deleted object)
    # The mod_revision of `previous` (0 for a create): what lets a reader of the history rebuild the state
    # before its oldest change. None where the backend does not know it (history written before it kept it).
    # Not part of ==: it only dates `previous`, which is.
    previous_revision: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StoreIdentity:
    """Who a store is: made once when the store is initialised, kept in it, the same for every server
    on it. `store_id` tells one store (or one life of a data directory) from another; `secret` keys
    what the servers sign for clients (page tokens)."""

    store_id: str
    secret: bytes = field(repr=False)

    @staticmethod
    def new() -> StoreIdentity:
        return StoreIdentity(secrets.token_hex(16), secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int  # all records as of this revision
    records: list[Record]  # every kind, in (kind, key) order


class DatastoreError(Exception):
    """The datastore failed in a way the caller cannot fix by changing the request (open failed, corrupt data)."""


class DatastoreUnavailable(DatastoreError):
    """The store cannot take this request now (closed, or the group's commit failed); the server says UNAVAILABLE.

    Unless the message says the outcome is unknown, nothing of the failed call was written.
    """


class DatastoreFull(DatastoreUnavailable):
    """The disk that holds the store is full: nothing of the failed call was written. The server
    says RESOURCE_EXHAUSTED; writes work again once there is space."""


class WriteFailed(DatastoreError):
    """Some writes of one `write()` call failed unexpectedly; each rolled back alone.

    `outcomes[i]` is the result of write i, or the exception it failed with. Writes with a result
    did commit (or conflicted) exactly as reported. The first failure is the `__cause__`.
    """

    def __init__(self, outcomes: Sequence[WriteResult | Exception]) -> None:
        self.outcomes = list(outcomes)
        failures = [(i, o) for i, o in enumerate(self.outcomes) if isinstance(o, Exception)]
        index, first = failures[0] if failures else (-1, None)
        super().__init__(f"{len(failures)} of {len(self.outcomes)} writes failed; write {index}: {first!r}")
        self.__cause__ = first


class RevisionCompacted(Exception):
    """Changes older than the retained history were asked for.

    `oldest` is the oldest revision R such that `changes_since(R)` works.
    """

    def __init__(self, oldest: int, requested: int | None = None) -> None:
        self.oldest = oldest
        self.requested = requested
        asked = f"changes since revision {requested}" if requested is not None else "changes"
        super().__init__(f"{asked} are compacted; the oldest revision history can resume from is {oldest}")


ChangeListener = Callable[[Sequence[Change]], None]
HealthListener = Callable[[bool], None]


def check_write(write: Write) -> None:
    """Reject a malformed write up front (TypeError, ValueError): it is a programming error, not a datastore failure."""
    if not isinstance(write, Put | Delete):
        raise TypeError(f"not a Put or Delete: {write!r}")
    if not isinstance(write.kind, Kind):
        raise TypeError(f"kind must be a Kind, not {write.kind!r}")
    if not isinstance(write.key, str) or not write.key:
        raise ValueError(f"key must be a non-empty string, not {write.key!r}")
    expected = write.expected_mod_revision
    if expected is not None and (not isinstance(expected, int) or expected < 0):
        raise ValueError(f"expected_mod_revision must be None or >= 0, not {expected!r}")
    if isinstance(write, Put):
        if not isinstance(write.value, bytes):
            raise TypeError(f"value must be bytes, not {type(write.value).__name__}")
    elif expected == 0:
        raise ValueError("a Delete's expected_mod_revision is None (must exist) or > 0, never 0")


def conflict_of(write: Write, current: Record | None) -> Conflict | None:
    """The precondition rule of Put and Delete: Conflict(current) if `write` may not apply to what
    is stored now (`current`, None for nothing), else None."""
    expected = write.expected_mod_revision
    if isinstance(write, Put):
        failed = expected is not None and (0 if current is None else current.mod_revision) != expected
    else:
        failed = current is None or (expected is not None and current.mod_revision != expected)
    return Conflict(current) if failed else None


class Datastore(abc.ABC):
    """Keys and opaque values per kind, one global revision, CAS writes, a change feed with history."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Open (creating if needed) the store; raises DatastoreError with a clear message if it cannot."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish the writes already accepted, then release everything. Later writes raise DatastoreUnavailable."""

    @abc.abstractmethod
    async def snapshot(self) -> Snapshot:
        """Every record at one revision, consistent with the listener stream (see the module docstring).

        When it returns, `current_revision == snapshot.revision` and every listener batch delivered
        so far has revisions <= it; batches delivered later have revisions > it.
        """

    @abc.abstractmethod
    async def get(self, kind: Kind, key: str) -> Record | None:
        """The durable record, or None."""

    @abc.abstractmethod
    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        """Apply the writes in order, each judged alone (a later write sees the earlier ones); one result each.

        Each successful write gets a revision: its own, unless the backend commits several writes in
        one transaction (etcd does, for writes to different keys, also of concurrent calls: SPEC 6.1
        lets a revision change several objects, never one object twice). Revisions follow the order
        of the writes. Returns once the writes are durable and every listener has seen them. Raises
        DatastoreUnavailable if nothing could be committed, and
        WriteFailed if some writes failed unexpectedly (the others stand).
        """

    @abc.abstractmethod
    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` with each committed batch of changes, in revision order, on the event loop thread.

        A listener must not block; an exception it raises is logged and does not affect the commit.
        """

    @abc.abstractmethod
    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        """Every change with `revision < change.revision <= current_revision`, ascending, at most `limit`.

        Raises RevisionCompacted if `revision < oldest_revision`.
        """

    @property
    @abc.abstractmethod
    def identity(self) -> StoreIdentity:
        """The store's identity (after `open`): made when the store was initialised, the same on every open."""

    @property
    @abc.abstractmethod
    def current_revision(self) -> int:
        """The revision of the last change delivered to listeners (0 for an empty, new store)."""

    @property
    @abc.abstractmethod
    def oldest_revision(self) -> int:
        """The lowest R for which `changes_since(R)` is complete."""

    @abc.abstractmethod
    async def compact(self, keep: int) -> int:
        """Drop history older than the last `keep` revisions; returns the new `oldest_revision`."""

    @property
    def healthy(self) -> bool:
        """Whether the store can take writes and feeds listeners now (always, unless a backend says otherwise)."""
        return True

    def add_health_listener(self, listener: HealthListener) -> None:  # noqa: B027 - a default, not abstract
        """Call `listener(healthy)` on the event loop thread each time `healthy` changes.

        The default suits a store that is always healthy: it never calls the listener.
        """
