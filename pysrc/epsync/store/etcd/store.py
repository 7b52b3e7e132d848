"""The distributed datastore: etcd v3, the etcd revision being every object's resource_version.

etcd counts every key it holds, so the revisions this store reports are etcd's and not contiguous;
every replica on one etcd reports the same ones. Where the data lives is keyspace.py's; the change
feed, a copy of the prefix's records kept by one etcd watch, is mirror.py's; how writes are packed
into etcd transactions is txn.py's.

Writes: every `write()` call joins the CommitQueue (feed.py); one committer task takes the calls as
groups, in the order they were made, and commits each group with the TxnPacker. `write()` returns
once the watch has delivered the writes' revision to the listeners (read-your-writes through the
server's cache); if it does not within `catch_up_seconds`, it raises DatastoreUnavailable saying
the write did commit.

etcd unreachable: writes raise DatastoreUnavailable ("etcd at ... is unavailable: ..."), saying
whether the outcome is unknown, and so do reads that go to etcd (`get`, `changes_since`); reads
from the mirror (`snapshot`) go on, and the watch reconnects by itself. `healthy` is the watch's.

History: `changes_since(R)` reads etcd's MVCC history with a watch from R + 1 (with prev_kv), up to
`current_revision`. A replica's history starts when it starts (SPEC 7): `oldest_revision` is the
revision `open()` read at (or of the last re-list), or later once etcd is compacted past it:
`compact(keep)` compacts etcd itself, which is cluster-wide (the keys of other prefixes and
programs too), and a compaction made elsewhere is noticed when a history read runs into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from epsync.store.base import (
    Change,
    ChangeListener,
    Committed,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    HealthListener,
    Kind,
    Record,
    RevisionCompacted,
    Snapshot,
    StoreIdentity,
    Write,
    WriteResult,
    check_write,
)
from epsync.store.etcd.client import (
    Compare,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    PutOp,
    RangeOp,
    RangeResult,
    endpoints_target,
    tls_credentials,
)
from epsync.store.etcd.keyspace import Keyspace
from epsync.store.etcd.mirror import WatchMirror
from epsync.store.etcd.txn import DEFAULT_MAX_TXN_BYTES, DEFAULT_MAX_TXN_OPS, TxnPacker
from epsync.store.feed import ChangeFeed, CommitQueue, HealthSignal, RevisionNotReached, results_of

log = logging.getLogger(__name__)

# Under the prefix, beside the kinds' keys (which the mirror alone reads): the store's identity, as JSON.
IDENTITY_KEY = b"identity"


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """TLS to etcd: the CA that signs etcd's certificate (None: the system's roots) and, for
    client-certificate authentication, a certificate and its key. `server_name` overrides the
    name the certificate is checked against (by default the endpoint's host)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


class ConnectEtcd(Protocol):
    """Makes the store's etcd client: `EtcdClient` itself, or anything that makes one the same way."""

    def __call__(
        self,
        target: str,
        *,
        timeout: float | None,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[tuple[str, int | str]],
    ) -> EtcdClient: ...


class EtcdDatastore(Datastore):
    """The datastore on etcd v3; several epsync replicas may share one etcd and prefix.

    `endpoints`: etcd client URLs or host:port (see `endpoints_target`). `request_timeout`: each
    etcd call. `catch_up_seconds`: how long a committed write waits for the watch to deliver it.
    `reconnect_max_seconds`: the cap of the watch's reconnection back-off. `max_txn_ops` and
    `max_txn_bytes`: the size of one etcd transaction. `max_group`: the most writes the committer
    takes at once (a larger call goes alone). `page_size`: keys per read when listing the prefix.
    `connect`: makes the etcd client (by default `EtcdClient`). `expect_existing`: refuse to open a prefix
    that holds no store yet (rather than start a new, empty one). `probe_seconds`: how often etcd is asked
    for its status, and how long it has to answer before the store reports itself unhealthy.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "/epsync/v1/",
        tls: EtcdTls | None = None,
        request_timeout: float = 5.0,
        catch_up_seconds: float = 5.0,
        reconnect_max_seconds: float = 5.0,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        max_txn_bytes: int = DEFAULT_MAX_TXN_BYTES,
        max_group: int = 1000,
        page_size: int = 1000,
        connect: ConnectEtcd = EtcdClient,
        expect_existing: bool = False,
        probe_seconds: float = 2.0,
    ) -> None:
        if max_txn_ops < 1 or max_txn_bytes < 1 or max_group < 1 or page_size < 1:
            raise ValueError("max_txn_ops, max_txn_bytes, max_group and page_size must be at least 1")
        self.endpoints = list(endpoints)
        self.keyspace = Keyspace(",".join(self.endpoints), prefix)  # raises ValueError for a bad prefix
        self.target = endpoints_target(self.endpoints, tls=tls is not None)  # raises ValueError early
        self.prefix = prefix
        self.tls = tls
        self.request_timeout = request_timeout
        self.catch_up_seconds = catch_up_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.max_group = max_group
        self._connect = connect
        self.expect_existing = expect_existing
        self.probe_seconds = probe_seconds
        # Healthy while the watch is established and etcd answers a status request within probe_seconds:
        # a frozen etcd keeps its connections open and silent, which the watch alone does not notice.
        self._health = HealthSignal()
        self._answering = True
        self._prober: asyncio.Task[None] | None = None
        self._where = self.keyspace.where
        self._client: EtcdClient | None = None
        self._open = False
        self._closing = False
        self._feed = ChangeFeed()
        self._mirror = WatchMirror(
            self.keyspace, self._feed, page_size=page_size, reconnect_max_seconds=reconnect_max_seconds
        )
        self._mirror.add_health_listener(lambda _: self._update_health())
        self._compacted = 0  # etcd compacted up to here, as far as this store knows
        self._identity: StoreIdentity | None = None
        # Writes.
        self._packer = TxnPacker(self.keyspace, max_ops=max_txn_ops, max_bytes=max_txn_bytes)
        self._queue = CommitQueue(max_group)
        self._committer: asyncio.Task[None] | None = None
        self._highest_committed = 0

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        if self._open:
            raise DatastoreError(f"datastore etcd at {self._where} ({self.prefix}) is already open")
        credentials: grpc.ChannelCredentials | None = None
        options: list[tuple[str, int | str]] = [
            # gRPC's own reconnection back-off grows to 2 minutes by default; the watch has its own.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", max(100, int(self.reconnect_max_seconds * 1000))),
        ]
        if self.tls is not None:
            try:
                credentials = tls_credentials(self.tls.ca_file, self.tls.cert_file, self.tls.key_file)
            except (OSError, ValueError) as error:
                raise DatastoreError(f"cannot set up TLS to etcd at {self._where}: {error}") from error
            if self.tls.server_name:
                options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        client = self._connect(self.target, timeout=self.request_timeout, credentials=credentials, options=options)
        try:
            self._identity = await self._claim_identity(client)
            await self._mirror.load(client)
        except EtcdUnavailable as error:
            await client.close()
            raise DatastoreUnavailable(self.keyspace.unavailable(error)) from None
        except EtcdError as error:
            await client.close()
            raise DatastoreError(f"cannot read epsync's data from etcd at {self._where}: {error}") from None
        except DatastoreError:
            await client.close()
            raise
        self._client = client
        self._compacted = 0
        self._open = True
        self._closing = False
        self._queue = CommitQueue(self.max_group)
        self._committer = asyncio.get_running_loop().create_task(self._commit_loop(), name="epsync-etcd-committer")
        # Healthy from the start when etcd answers; if the watch cannot start, open() still succeeds
        # (the data was read) and the watch keeps trying.
        await self._mirror.start(client, self.request_timeout)
        self._answering = True
        self._update_health()
        self._prober = asyncio.get_running_loop().create_task(self._probe(client), name="epsync-etcd-probe")
        log.info(
            "datastore etcd at %s (%s) open at revision %d with %d objects",
            self._where,
            self.prefix,
            self.current_revision,
            len(self._mirror.objects),
        )

    async def _claim_identity(self, client: EtcdClient) -> StoreIdentity:
        """The prefix's identity: made by the first server to open it (one transaction: only one can), read by
        every later one."""
        key = self.keyspace.raw_prefix + IDENTITY_KEY
        if self.expect_existing and await client.get(key) is None:
            raise DatastoreError(
                f"etcd at {self._where} holds no epsync store under {self.prefix}, and it is expected to "
                "(--expect-existing-store): is the prefix the right one, or was etcd wiped? Start without the flag "
                "to make a new, empty store"
            )
        mine = StoreIdentity.new()
        value = json.dumps({"store_id": mine.store_id, "secret": mine.secret.hex()}).encode()
        result = await client.txn([Compare(key, "create_revision", "==", 0)], [PutOp(key, value)], [RangeOp(key)])
        if result.succeeded:
            return mine
        found = result.responses[0]
        try:
            if not isinstance(found, RangeResult) or not found.kvs:
                raise ValueError("deleted meanwhile")
            stored = json.loads(found.kvs[0].value)
            return StoreIdentity(str(stored["store_id"]), bytes.fromhex(stored["secret"]))
        except (ValueError, KeyError, TypeError) as error:
            raise DatastoreError(
                f"etcd at {self._where}: the store identity at {key.decode(errors='replace')} is unreadable ({error}); "
                "it was not written by epsync: delete it to make a new one (clients then re-list)"
            ) from None

    @property
    def identity(self) -> StoreIdentity:
        if self._identity is None:
            raise DatastoreUnavailable(f"datastore etcd at {self._where} is not open")
        return self._identity

    async def close(self) -> None:
        if not self._open:
            return
        self._closing = True
        self._queue.close()
        if self._committer is not None:
            await self._committer  # commits every write accepted before close
            self._committer = None
        if self._highest_committed > self.current_revision and self.healthy:
            # Let the watch deliver what was committed, so the writers waiting for it hear back.
            with contextlib.suppress(DatastoreUnavailable):
                await self._caught_up(self._highest_committed, self.catch_up_seconds)
        self._open = False
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
            self._prober = None
        await self._mirror.stop()
        self._feed.fail_waiters(DatastoreUnavailable(f"datastore etcd at {self._where} closed"))
        if self._client is not None:
            await self._client.close()
            self._client = None
        log.info("datastore etcd at %s (%s) closed at revision %d", self._where, self.prefix, self.current_revision)

    # ----------------------------------------------------------------- reads

    async def snapshot(self) -> Snapshot:
        self._require_open()
        # The mirror is the state at the feed's revision: no await between reading it and returning.
        return Snapshot(self.current_revision, self._mirror.records())

    async def get(self, kind: Kind, key: str) -> Record | None:
        client = self._require_open()
        try:
            kv = await client.get(self.keyspace.key(kind, key))
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self.keyspace.unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"etcd at {self._where}: {error}") from None
        return None if kv is None else Record(kind, key, kv.value, kv.create_revision, kv.mod_revision)

    @property
    def current_revision(self) -> int:
        return self._feed.revision

    @property
    def oldest_revision(self) -> int:
        return max(self._compacted, self._mirror.listed_revision)

    @property
    def healthy(self) -> bool:
        return self._health.healthy

    def add_listener(self, listener: ChangeListener) -> None:
        self._feed.add_listener(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._health.add_listener(listener)

    def _update_health(self) -> None:
        self._health.set(self._mirror.healthy and self._answering)

    async def _probe(self, client: EtcdClient) -> None:
        """Ask etcd for its status every probe_seconds; unhealthy while it does not answer in that time."""
        while True:
            await asyncio.sleep(self.probe_seconds)
            try:
                async with asyncio.timeout(self.probe_seconds):
                    await client.status()
                answering = True
            except (TimeoutError, EtcdError) as error:
                if self._answering:
                    log.warning(
                        "etcd at %s did not answer a status request in %gs (%s)",
                        self._where,
                        self.probe_seconds,
                        error or "timeout",
                    )
                answering = False
            if answering != self._answering:
                self._answering = answering
                self._update_health()

    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        client = self._require_open()
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if revision < self.oldest_revision:
            raise RevisionCompacted(self.oldest_revision, revision)
        target, last = self.current_revision, self._mirror.last_event
        if last <= revision:
            return []  # no change under the prefix after `revision` (the watch saw every one)
        changes: list[Change] = []
        try:
            async with asyncio.timeout(self.request_timeout * 4):
                watch = client.watch(self.keyspace.raw_prefix, prefix=True, start_revision=revision + 1, prev_kv=True)
                async with watch:
                    async for batch in watch:
                        seen = 0
                        for event in batch.events:
                            seen = event.kv.mod_revision
                            if seen > target:
                                break
                            change = self._history_change(event.type, event.kv, event.prev_kv)
                            if change is not None:
                                changes.append(change)
                        if seen >= last or (limit is not None and len(changes) >= limit):
                            break
        except EtcdCompacted as error:
            self._note_compacted(error.compact_revision)
            raise RevisionCompacted(max(self.oldest_revision, revision + 1), revision) from None
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self.keyspace.unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"reading history from etcd at {self._where} failed: {error}") from None
        except TimeoutError:
            raise DatastoreUnavailable(
                f"etcd at {self._where} did not send the history after revision {revision} in time"
            ) from None
        return changes[:limit] if limit is not None else changes

    def _history_change(self, kind_of_event: str, kv: KeyValue, prev: KeyValue | None) -> Change | None:
        parsed = self.keyspace.parse(kv.key)
        if parsed is None:
            return None
        kind, key = parsed
        previous, previous_revision = (prev.value, prev.mod_revision) if prev is not None else (None, None)
        if kind_of_event == "delete":
            return Change(
                kv.mod_revision, kind, key, None, previous, prev.create_revision if prev else 0, previous_revision
            )
        if previous is None and kv.create_revision == kv.mod_revision:
            previous_revision = 0  # a create
        return Change(kv.mod_revision, kind, key, kv.value, previous, kv.create_revision, previous_revision)

    def _note_compacted(self, compact_revision: int | None) -> None:
        # etcd keeps revision C and later after a compaction at C: changes_since(C - 1) still works.
        if compact_revision is not None:
            self._compacted = max(self._compacted, compact_revision - 1)

    async def compact(self, keep: int) -> int:
        client = self._require_open()
        if keep < 0:
            raise ValueError(f"keep must be at least 0, not {keep}")
        target = self.current_revision - keep
        if target <= self.oldest_revision:
            return self.oldest_revision
        try:
            await client.compact(target, physical=True)
        except EtcdCompacted:
            pass  # etcd is already compacted past it
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self.keyspace.unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"compacting etcd at {self._where} failed: {error}") from None
        self._compacted = max(self._compacted, target)
        return self.oldest_revision

    # ----------------------------------------------------------------- writes

    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        writes = list(writes)
        for one in writes:
            check_write(one)
        if not self._open or self._closing:
            raise DatastoreUnavailable(f"datastore etcd at {self._where} is closed")
        if not writes:
            return []
        outcomes = await self._queue.submit(writes)
        committed = [o.revision for o in outcomes if isinstance(o, Committed)]
        if committed and max(committed) > self.current_revision:
            try:
                await self._caught_up(max(committed), self.catch_up_seconds)
            except DatastoreUnavailable as error:
                revisions = ", ".join(str(r) for r in sorted(set(committed)))
                raise DatastoreUnavailable(
                    f"the write did commit in etcd at {self._where} (revision {revisions}), but this replica has "
                    f"not caught up with it ({error}); the outcome is known: committed"
                ) from None
        return results_of(outcomes)

    async def _caught_up(self, revision: int, within: float) -> None:
        """Return once the listeners have had `revision`; DatastoreUnavailable after `within` seconds."""
        try:
            await self._feed.wait(revision, within)
        except RevisionNotReached as error:
            state = "established" if self.healthy else "down, reconnecting"
            raise DatastoreUnavailable(
                f"after {within:g}s this replica is at revision {error.current}, not {revision} "
                f"(its watch of etcd is {state})"
            ) from None

    async def _commit_loop(self) -> None:
        client = self._client
        assert client is not None
        while (calls := await self._queue.next_group()) is not None:
            try:
                outcomes = await self._packer.commit(client.txn, [call.writes for call in calls])
            except Exception as error:  # a bug: fail the group rather than strand its writers
                log.exception("datastore etcd at %s: group commit crashed", self._where)
                failure = DatastoreUnavailable(f"internal error committing to etcd: {error!r}; the outcome is unknown")
                outcomes = [[failure] * len(call.writes) for call in calls]
            for call, outcome in zip(calls, outcomes, strict=True):
                for result in outcome:
                    if isinstance(result, Committed):
                        self._highest_committed = max(self._highest_committed, result.revision)
                call.settle(outcome)

    # ----------------------------------------------------------------- helpers

    def _require_open(self) -> EtcdClient:
        if not self._open or self._client is None:
            raise DatastoreUnavailable(f"datastore etcd at {self._where} is closed")
        return self._client

    @property
    def relists(self) -> int:
        """How many times the store re-listed etcd after a compaction."""
        return self._mirror.relists

    @property
    def txns_committed(self) -> int:
        return self._packer.txns_committed

    @property
    def writes_committed(self) -> int:
        """Writes in committed txns (a Delete of nothing among them)."""
        return self._packer.writes_committed

    @property
    def txn_reruns(self) -> int:
        """Txns that failed a compare and whose other writes were run again."""
        return self._packer.txn_reruns


__all__ = ["DEFAULT_MAX_TXN_BYTES", "DEFAULT_MAX_TXN_OPS", "ConnectEtcd", "EtcdDatastore", "EtcdTls"]
