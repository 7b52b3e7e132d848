"""The distributed datastore: etcd v3, the etcd revision being every object's resource_version.

Layout: `<prefix>workloadendpoints/<namespace>/<name>` and `<prefix>profiles/<name>`, the values the
opaque bytes the layer above hands in. etcd counts every key it holds, so the revisions this store
reports are etcd's and not contiguous; every replica on one etcd reports the same ones.

The change feed: `open()` reads the whole prefix at one revision S (paged, every page at S), then
one etcd watch over the prefix from S + 1 feeds the listeners, one batch per watch response, in
revision order. Writes made by anything else (another replica, etcdctl) arrive the same way. The
store keeps the prefix's records in memory (key -> record as of the last delivered revision): a
listener batch's `previous` values come from there, so the watch needs no prev_kv, and
`snapshot()` is that map at `current_revision`, which makes the listener handshake of base.py
hold by construction (no await between reading the map and returning it).

Writes: one committer task takes the queued `write()` calls in the order they were made and packs
their writes into as few etcd transactions as etcd allows (at most `max_txn_ops` ops and about
`max_txn_bytes` bytes each, never one key twice, never past a write to a key already in the txn,
so writes keep their order). Preconditions are txn compares on mod_revision (0: the key must not
exist); a Delete without one needs no compare (deleting nothing is its Conflict). A txn is
all-or-nothing: when a compare fails, its failure branch reads every compared key, each write
whose precondition failed gets `Conflict(current)` from that read, and the others are re-run.
Writes that share a txn share its revision. `write()` returns once the watch has delivered the
writes' revision to the listeners (read-your-writes through the server's cache); if it does not
within `catch_up_seconds`, it raises DatastoreUnavailable saying the write did commit.

Faults:
- etcd unreachable: writes raise DatastoreUnavailable ("etcd at ... is unavailable: ..."), saying
  whether the outcome is unknown; the watch reconnects with capped, jittered exponential back-off
  and resumes from the last revision it saw + 1, so listeners get every change once. Reads from
  the cache go on. `healthy` is whether the watch is established; health listeners hear each change.
- etcd compacted past the watch's revision (after a long outage): the store re-lists the prefix at
  a new revision S and delivers ONE synthetic batch at revision S that turns the state the
  listeners have into the state at S: a Change for every key that appeared, changed (its
  mod_revision differs) or disappeared (value None), `previous` being the value the listeners last
  had (the store keeps it). Every change in it carries revision S, also where the object's own
  mod_revision is older; the records `snapshot()` and `get()` return keep the true mod_revision.
  Downstream watchers receive only the difference. If nothing differs, no batch is delivered and
  `current_revision` moves to S.

History: `changes_since(R)` reads etcd's MVCC history with a watch from R + 1 (with prev_kv), up to
`current_revision`. A replica's history starts when it starts (SPEC 7): `oldest_revision` is the
revision `open()` read at (or of the last re-list), or later once etcd is compacted past it:
`compact(keep)` compacts etcd itself, which is cluster-wide (the keys of other prefixes and
programs too), and a compaction made elsewhere is noticed when a history read runs into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from epsync.store.base import (
    KIND_OF_VALUE,
    Change,
    ChangeListener,
    Committed,
    Conflict,
    Datastore,
    DatastoreError,
    DatastoreUnavailable,
    HealthListener,
    Kind,
    Put,
    Record,
    RevisionCompacted,
    Snapshot,
    Write,
    WriteFailed,
    WriteResult,
    check_write,
)
from epsync.store.etcd.client import (
    Compare,
    DeleteOp,
    DeleteResult,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdRequestTooLarge,
    EtcdUnavailable,
    KeyValue,
    Op,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    Watch,
    WatchBatch,
    endpoints_target,
    prefix_range_end,
    tls_credentials,
)

log = logging.getLogger(__name__)

# etcd's defaults: --max-txn-ops 128 and --max-request-bytes 1.5 MiB; a txn stays under both.
DEFAULT_MAX_TXN_OPS = 128
DEFAULT_MAX_TXN_BYTES = 1024 * 1024
_OP_OVERHEAD_BYTES = 32  # protobuf framing of one op plus its compare and failure read, generously


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """TLS to etcd: the CA that signs etcd's certificate (None: the system's roots) and, for
    client-certificate authentication, a certificate and its key. `server_name` overrides the
    name the certificate is checked against (by default the endpoint's host)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


@dataclass(slots=True)
class _Call:
    """One `write()` call waiting for the committer."""

    writes: list[Write]
    future: asyncio.Future[list[WriteResult | Exception]]


@dataclass(slots=True)
class _Pending:
    """One write of a group on its way into a txn."""

    call: int  # index of its call in the group
    index: int  # index of the write in its call
    write: Write
    key: bytes
    size: int


class EtcdDatastore(Datastore):
    """The datastore on etcd v3; several epsync replicas may share one etcd and prefix.

    `endpoints`: etcd client URLs or host:port (see `endpoints_target`). `request_timeout`: each
    etcd call. `catch_up_seconds`: how long a committed write waits for the watch to deliver it.
    `reconnect_max_seconds`: the cap of the watch's reconnection back-off. `page_size`: keys per
    read when listing the prefix.
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
    ) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"the etcd prefix must start and end with '/', not {prefix!r}")
        if max_txn_ops < 1 or max_txn_bytes < 1 or max_group < 1 or page_size < 1:
            raise ValueError("max_txn_ops, max_txn_bytes, max_group and page_size must be at least 1")
        self.endpoints = list(endpoints)
        self.target = endpoints_target(self.endpoints, tls=tls is not None)  # raises ValueError early
        self.prefix = prefix
        self.tls = tls
        self.request_timeout = request_timeout
        self.catch_up_seconds = catch_up_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.max_txn_ops = max_txn_ops
        self.max_txn_bytes = max_txn_bytes
        self.max_group = max_group
        self.page_size = page_size
        self._prefix = prefix.encode()
        self._prefix_end = prefix_range_end(self._prefix)
        self._where = ",".join(self.endpoints)
        self._client: EtcdClient | None = None
        self._open = False
        self._closing = False
        self._listeners: list[ChangeListener] = []
        self._health_listeners: list[HealthListener] = []
        self._healthy = False
        # The mirror: every record under the prefix as of `_revision`, as the listeners have it.
        self._objects: dict[tuple[Kind, str], Record] = {}
        self._revision = 0  # last revision delivered to listeners (or of the open/re-list read)
        self._watch_revision = 0  # last revision the watch saw (resume from the next)
        self._last_event = 0  # revision of the last real etcd event delivered (history ends there)
        self._oldest = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Writes.
        self._queue: deque[_Call] = deque()
        self._wakeup = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._highest_committed = 0
        self._txns_committed = 0
        self._writes_committed = 0
        self._txn_reruns = 0
        # The watch.
        self._watcher: asyncio.Task[None] | None = None
        self._watch: Watch | None = None
        self._watch_allowed = asyncio.Event()  # cleared only by tests (`_suspend_watch`)
        self._first_watch_attempt: asyncio.Future[None] | None = None
        self._relists = 0

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
        client = EtcdClient(self.target, timeout=self.request_timeout, credentials=credentials, options=options)
        try:
            objects, revision = await self._read_all(client)
        except EtcdUnavailable as error:
            await client.close()
            raise DatastoreUnavailable(self._unavailable(error)) from None
        except EtcdError as error:
            await client.close()
            raise DatastoreError(f"cannot read epsync's data from etcd at {self._where}: {error}") from None
        self._client = client
        self._objects = objects
        self._revision = self._watch_revision = self._last_event = self._oldest = revision
        self._open = True
        self._closing = False
        self._wakeup = asyncio.Event()
        self._watch_allowed = asyncio.Event()
        self._watch_allowed.set()
        loop = asyncio.get_running_loop()
        self._first_watch_attempt = loop.create_future()
        self._committer = loop.create_task(self._commit_loop(), name="epsync-etcd-committer")
        self._watcher = loop.create_task(self._watch_loop(), name="epsync-etcd-watch")
        # Healthy from the start when etcd answers; if the watch cannot start, open() still succeeds
        # (the data was read) and the watch keeps trying.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first_watch_attempt), self.request_timeout)
        log.info(
            "datastore etcd at %s (%s) open at revision %d with %d objects",
            self._where,
            self.prefix,
            revision,
            len(objects),
        )

    async def close(self) -> None:
        if not self._open:
            return
        self._closing = True
        self._wakeup.set()
        if self._committer is not None:
            await self._committer  # drains every write accepted before close
            self._committer = None
        if self._highest_committed > self._revision and self._healthy:
            # Let the watch deliver what was committed, so the writers waiting for it hear back.
            with contextlib.suppress(DatastoreUnavailable):
                await self._caught_up(self._highest_committed, self.catch_up_seconds)
        self._open = False
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(DatastoreUnavailable(f"datastore etcd at {self._where} closed"))
        self._waiters = []
        if self._client is not None:
            await self._client.close()
            self._client = None
        self._healthy = False  # closed on purpose: not news for the health listeners
        log.info("datastore etcd at %s (%s) closed at revision %d", self._where, self.prefix, self._revision)

    # ----------------------------------------------------------------- reads

    async def snapshot(self) -> Snapshot:
        self._require_open()
        # The mirror is the state at `_revision`: no await between reading it and returning.
        records = sorted(self._objects.values(), key=lambda r: (r.kind.value, r.key))
        return Snapshot(self._revision, records)

    async def get(self, kind: Kind, key: str) -> Record | None:
        client = self._require_open()
        try:
            kv = await client.get(self._key(kind, key))
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self._unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"etcd at {self._where}: {error}") from None
        return None if kv is None else Record(kind, key, kv.value, kv.create_revision, kv.mod_revision)

    @property
    def current_revision(self) -> int:
        return self._revision

    @property
    def oldest_revision(self) -> int:
        return self._oldest

    @property
    def healthy(self) -> bool:
        return self._healthy

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._health_listeners.append(listener)

    async def changes_since(self, revision: int, limit: int | None = None) -> list[Change]:
        client = self._require_open()
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if revision < self._oldest:
            raise RevisionCompacted(self._oldest, revision)
        target, last = self._revision, self._last_event
        if last <= revision:
            return []  # no change under the prefix after `revision` (the watch saw every one)
        changes: list[Change] = []
        try:
            async with asyncio.timeout(self.request_timeout * 4):
                watch = client.watch(self._prefix, prefix=True, start_revision=revision + 1, prev_kv=True)
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
            raise RevisionCompacted(max(self._oldest, revision + 1), revision) from None
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self._unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"reading history from etcd at {self._where} failed: {error}") from None
        except TimeoutError:
            raise DatastoreUnavailable(
                f"etcd at {self._where} did not send the history after revision {revision} in time"
            ) from None
        return changes[:limit] if limit is not None else changes

    def _history_change(self, kind_of_event: str, kv: KeyValue, prev: KeyValue | None) -> Change | None:
        parsed = self._parse_key(kv.key)
        if parsed is None:
            return None
        kind, key = parsed
        previous = prev.value if prev is not None else None
        if kind_of_event == "delete":
            return Change(kv.mod_revision, kind, key, None, previous, prev.create_revision if prev else 0)
        return Change(kv.mod_revision, kind, key, kv.value, previous, kv.create_revision)

    def _note_compacted(self, compact_revision: int | None) -> None:
        # etcd keeps revision C and later after a compaction at C: changes_since(C - 1) still works.
        if compact_revision is not None:
            self._oldest = max(self._oldest, compact_revision - 1)

    async def compact(self, keep: int) -> int:
        client = self._require_open()
        if keep < 0:
            raise ValueError(f"keep must be at least 0, not {keep}")
        target = self._revision - keep
        if target <= self._oldest:
            return self._oldest
        try:
            await client.compact(target, physical=True)
        except EtcdCompacted:
            pass  # etcd is already compacted past it
        except EtcdUnavailable as error:
            raise DatastoreUnavailable(self._unavailable(error)) from None
        except EtcdError as error:
            raise DatastoreError(f"compacting etcd at {self._where} failed: {error}") from None
        self._oldest = max(self._oldest, target)
        return self._oldest

    # ----------------------------------------------------------------- writes

    async def write(self, writes: Sequence[Write]) -> list[WriteResult]:
        writes = list(writes)
        for one in writes:
            check_write(one)
        if not self._open or self._closing:
            raise DatastoreUnavailable(f"datastore etcd at {self._where} is closed")
        if not writes:
            return []
        future: asyncio.Future[list[WriteResult | Exception]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Call(writes, future))
        self._wakeup.set()
        outcomes = await future
        results = [o for o in outcomes if not isinstance(o, Exception)]
        committed = [r.revision for r in results if isinstance(r, Committed)]
        if committed and max(committed) > self._revision:
            try:
                await self._caught_up(max(committed), self.catch_up_seconds)
            except DatastoreUnavailable as error:
                revisions = ", ".join(str(r) for r in sorted(set(committed)))
                raise DatastoreUnavailable(
                    f"the write did commit in etcd at {self._where} (revision {revisions}), but this replica has "
                    f"not caught up with it ({error}); the outcome is known: committed"
                ) from None
        if len(results) == len(outcomes):
            return results
        failures = [o for o in outcomes if isinstance(o, Exception)]
        if not results and all(isinstance(f, DatastoreUnavailable) for f in failures):
            raise failures[0]
        raise WriteFailed(outcomes)

    async def _caught_up(self, revision: int, within: float) -> None:
        """Return once the listeners have had `revision`; DatastoreUnavailable after `within` seconds."""
        if self._revision >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, waiter))
        try:
            await asyncio.wait_for(waiter, within)
        except TimeoutError:
            state = "established" if self._healthy else "down, reconnecting"
            raise DatastoreUnavailable(
                f"after {within:g}s this replica is at revision {self._revision}, not {revision} "
                f"(its watch of etcd is {state})"
            ) from None

    async def _commit_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            calls = self._take_group()
            try:
                outcomes = await self._commit_group(calls)
            except Exception as error:  # a bug: fail the group rather than strand its writers
                log.exception("datastore etcd at %s: group commit crashed", self._where)
                failure = DatastoreUnavailable(f"internal error committing to etcd: {error!r}; the outcome is unknown")
                outcomes = [[failure] * len(call.writes) for call in calls]
            for call, outcome in zip(calls, outcomes, strict=True):
                if not call.future.done():  # the caller gave up waiting; the writes stand regardless
                    call.future.set_result(outcome)

    def _take_group(self) -> list[_Call]:
        calls: list[_Call] = []
        size = 0
        while self._queue:
            n = len(self._queue[0].writes)
            if calls and size + n > self.max_group:
                break  # a call is never split across groups
            calls.append(self._queue.popleft())
            size += n
        return calls

    async def _commit_group(self, calls: list[_Call]) -> list[list[WriteResult | Exception]]:
        """Commit the writes of `calls`, in order, in as few txns as etcd allows; one outcome per write."""
        client = self._client
        assert client is not None
        outcomes: list[list[WriteResult | Exception | None]] = [[None] * len(call.writes) for call in calls]
        pending: deque[_Pending] = deque()
        for c, call in enumerate(calls):
            for i, one in enumerate(call.writes):
                key = self._key(one.kind, one.key)
                size = len(key) + (len(one.value) if isinstance(one, Put) else 0) + _OP_OVERHEAD_BYTES
                pending.append(_Pending(c, i, one, key, size))
        txn_cap = self.max_txn_ops
        while pending:
            batch = self._next_txn(pending, txn_cap)
            try:
                rerun = await self._run_txn(client, batch, outcomes)
            except EtcdRequestTooLarge as error:
                if len(batch) > 1:
                    pending.extendleft(reversed(batch))
                    txn_cap = max(1, len(batch) // 2)  # etcd's caps are lower than ours: halve until it fits
                    continue
                outcomes[batch[0].call][batch[0].index] = DatastoreError(
                    f"etcd at {self._where} refused the write as too large: {error}; nothing was written"
                )
                continue
            except EtcdUnavailable as error:
                unknown = _outcome_unknown(error)
                failure = DatastoreUnavailable(
                    self._unavailable(error) + ("; the outcome is unknown" if unknown else "; nothing was written")
                )
                for item in batch:
                    outcomes[item.call][item.index] = failure
                skipped = DatastoreUnavailable(
                    f"{self._unavailable(error)}; this write was not attempted: nothing was written"
                )
                for item in pending:
                    outcomes[item.call][item.index] = skipped
                pending.clear()
                break
            except EtcdError as error:
                for item in batch:
                    outcomes[item.call][item.index] = DatastoreError(
                        f"etcd at {self._where} refused the write: {error}; nothing was written"
                    )
                continue
            if rerun:
                self._txn_reruns += 1
                pending.extendleft(reversed(rerun))
            txn_cap = self.max_txn_ops
        done: list[list[WriteResult | Exception]] = []
        for call_outcomes in outcomes:
            assert all(o is not None for o in call_outcomes)
            done.append([o for o in call_outcomes if o is not None])
        return done

    def _next_txn(self, pending: deque[_Pending], cap: int) -> list[_Pending]:
        """The writes for the next txn, from the front: stops at a key already in it (order matters)."""
        batch: list[_Pending] = []
        keys: set[bytes] = set()
        size = 0
        while pending and len(batch) < cap:
            item = pending[0]
            if item.key in keys or (batch and size + item.size > self.max_txn_bytes):
                break
            batch.append(pending.popleft())
            keys.add(item.key)
            size += item.size
        return batch

    async def _run_txn(
        self, client: EtcdClient, batch: list[_Pending], outcomes: list[list[WriteResult | Exception | None]]
    ) -> list[_Pending]:
        """One txn for `batch`; records each write's outcome, or returns the writes to run again."""
        compares: list[Compare] = []
        compared: list[_Pending] = []
        success: list[Op] = []
        for item in batch:
            expected = item.write.expected_mod_revision
            if expected is not None:
                compares.append(Compare(item.key, "mod_revision", "==", expected))
                compared.append(item)
            if isinstance(item.write, Put):
                success.append(PutOp(item.key, item.write.value, prev_kv=True))
            else:
                success.append(DeleteOp(item.key, prev_kv=True))
        failure: list[Op] = [RangeOp(item.key) for item in compared]
        result = await client.txn(compares, success, failure)
        if result.succeeded:
            self._txns_committed += 1
            self._writes_committed += len(batch)
            for item, response in zip(batch, result.responses, strict=True):
                outcomes[item.call][item.index] = self._committed(item.write, response, result.revision)
            return []
        current: dict[bytes, KeyValue | None] = {}
        for item, response in zip(compared, result.responses, strict=True):
            assert isinstance(response, RangeResult)
            current[item.key] = response.kvs[0] if response.kvs else None
        rerun: list[_Pending] = []
        conflicts = 0
        for item in batch:
            expected = item.write.expected_mod_revision
            kv = current.get(item.key)
            if expected is not None and (kv.mod_revision if kv is not None else 0) != expected:
                outcomes[item.call][item.index] = Conflict(self._record(item.write, kv))
                conflicts += 1
            else:
                rerun.append(item)
        if not conflicts:  # cannot happen: the failure branch read at the revision the compares failed at
            raise EtcdError(f"etcd: a txn's compares failed, but none fails against what it read: {current}")
        return rerun

    def _committed(self, write: Write, response: object, revision: int) -> WriteResult:
        if isinstance(write, Put):
            assert isinstance(response, PutResult)
            previous = self._record(write, response.prev_kv)
            created = previous.create_revision if previous is not None else revision
            self._highest_committed = max(self._highest_committed, revision)
            return Committed(revision, Record(write.kind, write.key, write.value, created, revision), previous)
        assert isinstance(response, DeleteResult)
        if not response.deleted:
            return Conflict(None)  # a Delete without a precondition needs the key to exist
        self._highest_committed = max(self._highest_committed, revision)
        return Committed(revision, None, self._record(write, response.prev_kvs[0] if response.prev_kvs else None))

    @staticmethod
    def _record(write: Write, kv: KeyValue | None) -> Record | None:
        return None if kv is None else Record(write.kind, write.key, kv.value, kv.create_revision, kv.mod_revision)

    # ----------------------------------------------------------------- the watch

    async def _watch_loop(self) -> None:
        failures = 0
        while True:
            await self._watch_allowed.wait()
            client = self._client
            assert client is not None
            watch = client.watch(
                self._prefix, prefix=True, start_revision=self._watch_revision + 1, progress_notify=True
            )
            self._watch = watch
            try:
                await watch.start()
                failures = 0
                self._set_healthy(True)
                self._first_attempt_done()
                async for batch in watch:
                    self._deliver(batch)
            except EtcdCompacted as error:
                log.warning(
                    "etcd at %s is compacted past revision %d (%s): re-listing %s",
                    self._where,
                    self._watch_revision + 1,
                    error,
                    self.prefix,
                )
                try:
                    await self._relist(client)
                    continue
                except EtcdError as relist_error:
                    self._watch_failed(relist_error, "re-listing after compaction")
            except EtcdError as error:
                self._watch_failed(error, "watching")
            except Exception as error:  # a bug; keep the feed alive rather than stop it for good
                log.exception("datastore etcd at %s: the watch failed", self._where)
                self._watch_failed(error, "watching")
            finally:
                self._watch = None
            if not self._watch_allowed.is_set():
                continue  # suspended by a test: no back-off
            delay = min(self.reconnect_max_seconds, 0.1 * 2**failures)
            failures = min(failures + 1, 30)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    def _watch_failed(self, error: Exception, doing: str) -> None:
        if self._healthy:
            log.warning("etcd at %s: %s failed (%s); reconnecting with back-off", self._where, doing, error)
        self._set_healthy(False)
        self._first_attempt_done()

    def _first_attempt_done(self) -> None:
        if self._first_watch_attempt is not None and not self._first_watch_attempt.done():
            self._first_watch_attempt.set_result(None)

    def _deliver(self, batch: WatchBatch) -> None:
        """One watch response: update the mirror and hand its changes to the listeners as one batch."""
        changes: list[Change] = []
        for event in batch.events:
            kv = event.kv
            revision = kv.mod_revision
            if revision <= self._watch_revision:
                continue  # already delivered (cannot happen: the watch resumes after the last one)
            self._last_event = revision
            parsed = self._parse_key(kv.key)
            if parsed is None:
                log.warning("etcd at %s: ignoring key %r under %s", self._where, kv.key, self.prefix)
                continue
            old = self._objects.get(parsed)
            kind, key = parsed
            if event.type == "put":
                self._objects[parsed] = Record(kind, key, kv.value, kv.create_revision, revision)
                changes.append(Change(revision, kind, key, kv.value, old.value if old else None, kv.create_revision))
            elif old is not None:
                del self._objects[parsed]
                changes.append(Change(revision, kind, key, None, old.value, old.create_revision))
        if batch.events:
            self._watch_revision = max(self._watch_revision, batch.events[-1].kv.mod_revision)
        elif batch.revision > self._watch_revision:
            # A progress notification: nothing under the prefix up to batch.revision. Resuming after it
            # keeps a reconnection from asking for history etcd may have compacted meanwhile.
            self._watch_revision = batch.revision
        if changes:
            self._publish(changes)

    def _publish(self, changes: list[Change]) -> None:
        self._revision = changes[-1].revision
        for listener in list(self._listeners):
            try:
                listener(changes)
            except Exception:
                log.exception("datastore listener %r failed at revision %d", listener, self._revision)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        waiting = []
        for revision, waiter in self._waiters:
            if waiter.done():
                continue
            if revision <= self._revision:
                waiter.set_result(None)
            else:
                waiting.append((revision, waiter))
        self._waiters = waiting

    async def _relist(self, client: EtcdClient) -> None:
        """Read the prefix anew at a revision S and deliver the difference as one batch at S."""
        objects, revision = await self._read_all(client)
        changes: list[Change] = []
        for name in sorted(self._objects.keys() | objects.keys(), key=lambda k: (k[0].value, k[1])):
            old, new = self._objects.get(name), objects.get(name)
            kind, key = name
            if new is None:
                assert old is not None
                changes.append(Change(revision, kind, key, None, old.value, old.create_revision))
            elif old is None or old.mod_revision != new.mod_revision:
                changes.append(Change(revision, kind, key, new.value, old.value if old else None, new.create_revision))
        self._objects = objects
        self._watch_revision = self._last_event = revision
        self._oldest = max(self._oldest, revision)
        self._relists += 1
        log.warning(
            "etcd at %s: re-listed %s at revision %d, %d changes", self._where, self.prefix, revision, len(changes)
        )
        if changes:
            self._publish(changes)
        else:
            self._revision = max(self._revision, revision)
            self._wake_waiters()

    async def _read_all(self, client: EtcdClient) -> tuple[dict[tuple[Kind, str], Record], int]:
        """Every record under the prefix at one revision, read in pages all at that revision."""
        for _attempt in range(5):
            objects: dict[tuple[Kind, str], Record] = {}
            try:
                page = await client.range(self._prefix, prefix=True, limit=self.page_size)
                revision = page.revision
                while True:
                    for kv in page.kvs:
                        parsed = self._parse_key(kv.key)
                        if parsed is not None:
                            objects[parsed] = Record(
                                parsed[0], parsed[1], kv.value, kv.create_revision, kv.mod_revision
                            )
                    if not page.more or not page.kvs:
                        return objects, revision
                    page = await client.range(
                        page.kvs[-1].key + b"\0", range_end=self._prefix_end, revision=revision, limit=self.page_size
                    )
            except EtcdCompacted:
                continue  # compacted while paging: read again at a newer revision
        raise EtcdError(f"etcd at {self._where} kept being compacted while {self.prefix} was read")

    # ----------------------------------------------------------------- helpers

    def _require_open(self) -> EtcdClient:
        if not self._open or self._client is None:
            raise DatastoreUnavailable(f"datastore etcd at {self._where} is closed")
        return self._client

    def _key(self, kind: Kind, key: str) -> bytes:
        return self._prefix + f"{kind.value}/{key}".encode()

    def _parse_key(self, raw: bytes) -> tuple[Kind, str] | None:
        if not raw.startswith(self._prefix):
            return None
        kind_name, slash, key = raw[len(self._prefix) :].decode(errors="replace").partition("/")
        kind = KIND_OF_VALUE.get(kind_name)
        if kind is None or not slash or not key:
            return None
        return kind, key

    def _unavailable(self, error: EtcdError) -> str:
        return f"etcd at {self._where} is unavailable: {error.details or error}"

    def _set_healthy(self, healthy: bool) -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        for listener in list(self._health_listeners):
            try:
                listener(healthy)
            except Exception:
                log.exception("datastore health listener %r failed", listener)

    # ----------------------------------------------------------------- test seams

    def _suspend_watch(self) -> None:
        """Stop the watch until `_resume_watch` (tests: a replica whose watch fell behind)."""
        self._watch_allowed.clear()
        if self._watch is not None:
            self._watch.cancel()

    def _resume_watch(self) -> None:
        self._watch_allowed.set()

    @property
    def relists(self) -> int:
        """How many times the store re-listed etcd after a compaction (for tests and status)."""
        return self._relists

    @property
    def txns_committed(self) -> int:
        return self._txns_committed

    @property
    def writes_committed(self) -> int:
        """Writes in committed txns (a Delete of nothing among them)."""
        return self._writes_committed

    @property
    def txn_reruns(self) -> int:
        """Txns that failed a compare and whose other writes were run again."""
        return self._txn_reruns


def _outcome_unknown(error: EtcdError) -> bool:
    """Whether a failed call may still have been applied: only a connection never made says no."""
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    details = error.details.lower()
    return not any(sign in details for sign in ("failed to connect", "connection refused", "no leader", "not capable"))


__all__ = ["DEFAULT_MAX_TXN_BYTES", "DEFAULT_MAX_TXN_OPS", "EtcdDatastore", "EtcdTls"]
