"""Packing a group of writes into etcd transactions, and reading each write's result back.

`TxnPacker.commit` takes the writes of a group's calls, in the order they were made, and packs
them into as few etcd transactions as etcd allows: at most `max_ops` ops and about `max_bytes`
bytes each, never one key twice, never past a write to a key already in the txn, so writes keep
their order. Preconditions are txn compares on mod_revision (0: the key must not exist); a Delete
without one needs no compare (deleting nothing is its Conflict). A txn is all-or-nothing: when a
compare fails, its failure branch reads every compared key, each write whose precondition failed
gets `Conflict(current)` from that read, and the others are re-run. Writes that share a txn share
its revision.

When etcd refuses a txn as too large (its own caps are lower than ours), the txn is halved until
it fits; a single write etcd refuses fails alone. When etcd cannot be reached, the writes of that
txn fail saying whether the outcome is unknown, and the rest of the group is not attempted.

It does no I/O of its own: `commit` is handed the function that runs one txn (`EtcdClient.txn`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc

from epsync.store.base import (
    Committed,
    Conflict,
    DatastoreError,
    DatastoreUnavailable,
    Put,
    Record,
    Write,
    WriteResult,
    conflict_of,
)
from epsync.store.etcd.client import (
    Compare,
    DeleteOp,
    DeleteResult,
    EtcdError,
    EtcdRequestTooLarge,
    EtcdUnavailable,
    KeyValue,
    Op,
    OpResult,
    PutOp,
    PutResult,
    RangeOp,
    RangeResult,
    TxnResult,
)
from epsync.store.etcd.keyspace import Keyspace
from epsync.store.feed import Outcomes

# etcd's defaults: --max-txn-ops 128 and --max-request-bytes 1.5 MiB; a txn stays under both.
DEFAULT_MAX_TXN_OPS = 128
DEFAULT_MAX_TXN_BYTES = 1024 * 1024
_OP_OVERHEAD_BYTES = 32  # protobuf framing of one op plus its compare and failure read, generously

RunTxn = Callable[[Sequence[Compare], Sequence[Op], Sequence[Op]], Awaitable[TxnResult]]


@dataclass(slots=True)
class _Pending:
    """One write of a group on its way into a txn."""

    call: int  # index of its call in the group
    index: int  # index of the write in its call
    write: Write
    key: bytes
    size: int


class TxnPacker:
    """Commits groups of writes in etcd transactions of at most `max_ops` ops and about `max_bytes` bytes."""

    def __init__(
        self, keyspace: Keyspace, *, max_ops: int = DEFAULT_MAX_TXN_OPS, max_bytes: int = DEFAULT_MAX_TXN_BYTES
    ):
        if max_ops < 1 or max_bytes < 1:
            raise ValueError("max_txn_ops and max_txn_bytes must be at least 1")
        self.keyspace = keyspace
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.txns_committed = 0
        self.writes_committed = 0  # writes in committed txns (a Delete of nothing among them)
        self.txn_reruns = 0  # txns that failed a compare and whose other writes were run again

    async def commit(self, run_txn: RunTxn, calls: Sequence[Sequence[Write]]) -> list[Outcomes]:
        """Commit the writes of `calls`, in order, in as few txns as etcd allows; one outcome per write."""
        outcomes: list[list[WriteResult | Exception | None]] = [[None] * len(writes) for writes in calls]
        pending: deque[_Pending] = deque()
        for c, writes in enumerate(calls):
            for i, one in enumerate(writes):
                key = self.keyspace.key(one.kind, one.key)
                size = len(key) + (len(one.value) if isinstance(one, Put) else 0) + _OP_OVERHEAD_BYTES
                pending.append(_Pending(c, i, one, key, size))
        where = self.keyspace.where
        txn_cap = self.max_ops
        while pending:
            batch = self._next_txn(pending, txn_cap)
            try:
                rerun = await self._run_txn(run_txn, batch, outcomes)
            except EtcdRequestTooLarge as error:
                if len(batch) > 1:
                    pending.extendleft(reversed(batch))
                    txn_cap = max(1, len(batch) // 2)  # etcd's caps are lower than ours: halve until it fits
                    continue
                outcomes[batch[0].call][batch[0].index] = DatastoreError(
                    f"etcd at {where} refused the write as too large: {error}; nothing was written"
                )
                continue
            except EtcdUnavailable as error:
                unknown = outcome_unknown(error)
                failure = DatastoreUnavailable(
                    self.keyspace.unavailable(error)
                    + ("; the outcome is unknown" if unknown else "; nothing was written")
                )
                for item in batch:
                    outcomes[item.call][item.index] = failure
                skipped = DatastoreUnavailable(
                    f"{self.keyspace.unavailable(error)}; this write was not attempted: nothing was written"
                )
                for item in pending:
                    outcomes[item.call][item.index] = skipped
                pending.clear()
                break
            except EtcdError as error:
                for item in batch:
                    outcomes[item.call][item.index] = DatastoreError(
                        f"etcd at {where} refused the write: {error}; nothing was written"
                    )
                continue
            if rerun:
                self.txn_reruns += 1
                pending.extendleft(reversed(rerun))
            txn_cap = self.max_ops
        done: list[Outcomes] = []
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
            if item.key in keys or (batch and size + item.size > self.max_bytes):
                break
            batch.append(pending.popleft())
            keys.add(item.key)
            size += item.size
        return batch

    async def _run_txn(
        self, run_txn: RunTxn, batch: list[_Pending], outcomes: list[list[WriteResult | Exception | None]]
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
        result = await run_txn(compares, success, failure)
        if result.succeeded:
            self.txns_committed += 1
            self.writes_committed += len(batch)
            for item, response in zip(batch, result.responses, strict=True):
                outcomes[item.call][item.index] = _committed(item.write, response, result.revision)
            return []
        current: dict[bytes, KeyValue | None] = {}
        for item, response in zip(compared, result.responses, strict=True):
            assert isinstance(response, RangeResult)
            current[item.key] = response.kvs[0] if response.kvs else None
        rerun: list[_Pending] = []
        conflicts = 0
        for item in batch:
            # Only the compared writes were read; the others (Deletes without one) are re-run.
            conflict = conflict_of(item.write, _record(item.write, current[item.key])) if item.key in current else None
            if conflict is not None:
                outcomes[item.call][item.index] = conflict
                conflicts += 1
            else:
                rerun.append(item)
        if not conflicts:  # cannot happen: the failure branch read at the revision the compares failed at
            raise EtcdError(f"etcd: a txn's compares failed, but none fails against what it read: {current}")
        return rerun


def _committed(write: Write, response: OpResult, revision: int) -> WriteResult:
    if isinstance(write, Put):
        assert isinstance(response, PutResult)
        previous = _record(write, response.prev_kv)
        created = previous.create_revision if previous is not None else revision
        return Committed(revision, Record(write.kind, write.key, write.value, created, revision), previous)
    assert isinstance(response, DeleteResult)
    if not response.deleted:
        return Conflict(None)  # a Delete without a precondition needs the key to exist
    return Committed(revision, None, _record(write, response.prev_kvs[0] if response.prev_kvs else None))


def _record(write: Write, kv: KeyValue | None) -> Record | None:
    return None if kv is None else Record(write.kind, write.key, kv.value, kv.create_revision, kv.mod_revision)


def outcome_unknown(error: EtcdError) -> bool:
    """Whether a failed call may still have been applied: only a connection never made says no."""
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    details = error.details.lower()
    return not any(sign in details for sign in ("failed to connect", "connection refused", "no leader", "not capable"))
