"""Packing writes into etcd transactions, against a small in-memory etcd: no etcd needed.

`MemoryEtcd.txn` does what etcd's Txn does with the requests the packer sends (compares on
mod_revision; put, delete and range of single keys; one revision per txn that changes something),
and refuses what etcd would refuse, so the packer's caps, ordering, re-runs and failures can be
checked one transaction at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from epsync.store.base import (
    Committed,
    Conflict,
    DatastoreError,
    DatastoreUnavailable,
    Delete,
    Kind,
    Put,
    Record,
    Write,
    WriteResult,
)
from epsync.store.etcd.client import (
    Compare,
    DeleteResult,
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
from epsync.store.etcd.txn import TxnPacker
from epsync.store.feed import Outcomes

EP = Kind.WORKLOAD_ENDPOINT
KEYSPACE = Keyspace("memory", "/p/")


@dataclass
class MemoryEtcd:
    """etcd's Txn on one flat keyspace, for the requests the packer makes.

    `max_ops` refuses a txn of more ops (etcd's --max-txn-ops), `max_value_bytes` a txn whose
    values add up to more (its --max-request-bytes); `down` makes every txn fail as an
    unreachable etcd does, with `down` as the gRPC details.
    """

    max_ops: int = 128
    max_value_bytes: int = 1 << 20
    down: str = ""
    revision: int = 1
    kvs: dict[bytes, KeyValue] = field(default_factory=dict)
    txns: list[list[bytes]] = field(default_factory=list)  # the keys each txn that ran wrote or read

    async def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if self.down:
            raise EtcdUnavailable("etcd is down", code=grpc.StatusCode.UNAVAILABLE, details=self.down)
        if len(success) > self.max_ops or sum(len(op.value) for op in success if isinstance(op, PutOp)) > (
            self.max_value_bytes
        ):
            raise EtcdRequestTooLarge("etcdserver: request is too large")
        succeeded = all(self._mod_revision(c.key) == c.value for c in compares)
        ops = success if succeeded else failure
        self.txns.append([self._bytes(op.key) for op in ops])
        changes = any(
            isinstance(op, PutOp) or self._bytes(op.key) in self.kvs for op in ops if not isinstance(op, RangeOp)
        )
        revision = self.revision + 1 if changes else self.revision
        responses = [self._apply(op, revision) for op in ops]
        self.revision = revision
        return TxnResult(succeeded, revision, responses)

    def put(self, key: str, value: bytes) -> KeyValue:
        """A write by someone else, outside any txn of the packer's."""
        self.revision += 1
        result = self._apply(PutOp(key, value), self.revision)
        assert isinstance(result, PutResult)
        return self.kvs[self._bytes(key)]

    def _apply(self, op: Op, revision: int) -> OpResult:
        key = self._bytes(op.key)
        before = self.kvs.get(key)
        if isinstance(op, RangeOp):
            return RangeResult(revision, [before] if before else [], int(before is not None), False)
        if isinstance(op, PutOp):
            created = before.create_revision if before else revision
            version = before.version + 1 if before else 1
            self.kvs[key] = KeyValue(key, op.value, created, revision, version)
            return PutResult(revision, before if op.prev_kv else None)
        self.kvs.pop(key, None)
        return DeleteResult(revision, int(before is not None), [before] if before and op.prev_kv else [])

    def _mod_revision(self, key: bytes | str) -> int:
        kv = self.kvs.get(self._bytes(key))
        return kv.mod_revision if kv else 0

    @staticmethod
    def _bytes(key: bytes | str) -> bytes:
        return key.encode() if isinstance(key, str) else key


def results(outcomes: Outcomes) -> list[WriteResult]:
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    return [o for o in outcomes if not isinstance(o, Exception)]


def revisions(outcomes: Outcomes) -> list[int]:
    return [o.revision for o in results(outcomes) if isinstance(o, Committed)]


async def test_a_call_goes_in_txns_of_at_most_the_op_cap_each_stopping_before_a_key_it_already_holds() -> None:
    etcd = MemoryEtcd()
    packer = TxnPacker(KEYSPACE, max_ops=10)
    writes: list[Write] = [Put(EP, f"ns/k{i}", b"v") for i in range(25)]
    writes += [Put(EP, "ns/k22", b"again"), Put(EP, "ns/x", b"x")]
    (outcomes,) = await packer.commit(etcd.txn, [writes])
    assert [len(keys) for keys in etcd.txns] == [10, 10, 5, 2]
    assert revisions(outcomes) == [2] * 10 + [3] * 10 + [4] * 5 + [5] * 2
    updated = results(outcomes)[25]
    assert isinstance(updated, Committed)
    assert updated.previous == Record(EP, "ns/k22", b"v", 4, 4)
    assert updated.record == Record(EP, "ns/k22", b"again", 4, 5)
    assert (packer.txns_committed, packer.writes_committed, packer.txn_reruns) == (4, 27, 0)


async def test_the_byte_cap_closes_a_txn_before_the_write_that_would_cross_it() -> None:
    etcd = MemoryEtcd()
    packer = TxnPacker(KEYSPACE, max_bytes=1100)  # each write is about 360 bytes with its key and framing
    (outcomes,) = await packer.commit(etcd.txn, [[Put(EP, f"ns/k{i}", b"x" * 300) for i in range(7)]])
    assert revisions(outcomes) == [2, 2, 2, 3, 3, 3, 4]


async def test_calls_share_txns_and_each_gets_its_own_outcomes_in_order() -> None:
    etcd = MemoryEtcd()
    packer = TxnPacker(KEYSPACE)
    calls: list[list[Write]] = [
        [Put(EP, "ns/a", b"1")],
        [Put(EP, "ns/b", b"2"), Put(EP, "ns/a", b"3")],
        [Delete(EP, "ns/b")],
    ]
    first, second, third = await packer.commit(etcd.txn, calls)
    assert revisions(first) == [2]
    assert revisions(second) == [2, 3], "the second write to ns/a waits for the next txn"
    assert revisions(third) == [3]
    assert len(etcd.txns) == 2


async def test_a_failed_compare_gives_conflicts_from_the_failure_read_and_reruns_the_rest() -> None:
    etcd = MemoryEtcd()
    packer = TxnPacker(KEYSPACE)
    stored = [etcd.put(f"/p/workloadendpoints/ns/k{i}", b"old") for i in range(4)]
    writes: list[Write] = [Put(EP, f"ns/k{i}", b"new", expected_mod_revision=stored[i].mod_revision) for i in range(4)]
    writes[1] = Put(EP, "ns/k1", b"stale", expected_mod_revision=stored[1].mod_revision - 1)
    writes[2] = Put(EP, "ns/k2", b"exists", expected_mod_revision=0)
    writes += [Put(EP, "ns/new", b"n"), Delete(EP, "ns/missing"), Delete(EP, "ns/gone", expected_mod_revision=7)]
    (outcomes,) = await packer.commit(etcd.txn, [writes])
    done = results(outcomes)
    assert done[1] == Conflict(Record(EP, "ns/k1", b"old", stored[1].create_revision, stored[1].mod_revision))
    assert done[2] == Conflict(Record(EP, "ns/k2", b"old", stored[2].create_revision, stored[2].mod_revision))
    assert done[5] == Conflict(None), "a Delete of nothing"
    assert done[6] == Conflict(None), "a Delete with a precondition, of nothing"
    assert [type(r) for r in done] == [Committed, Conflict, Conflict, Committed, Committed, Conflict, Conflict]
    assert revisions(outcomes) == [etcd.revision] * 3, "the re-run commits the rest in one txn"
    assert (packer.txns_committed, packer.txn_reruns) == (1, 1)


async def test_a_txn_etcd_refuses_as_too_large_is_halved_until_it_fits_and_a_single_write_fails_alone() -> None:
    etcd = MemoryEtcd(max_ops=3, max_value_bytes=100)
    packer = TxnPacker(KEYSPACE)
    writes: list[Write] = [Put(EP, f"ns/k{i}", b"v") for i in range(4)]
    writes.insert(2, Put(EP, "ns/huge", b"x" * 200))
    (outcomes,) = await packer.commit(etcd.txn, [writes])
    huge = outcomes[2]
    assert isinstance(huge, DatastoreError)
    assert "too large" in str(huge)
    assert "nothing was written" in str(huge)
    assert b"/p/workloadendpoints/ns/huge" not in etcd.kvs
    assert all(isinstance(o, Committed) for i, o in enumerate(outcomes) if i != 2)
    assert all(len(keys) <= 3 for keys in etcd.txns)


@pytest.mark.parametrize(
    ("details", "outcome"),
    [("failed to connect to all addresses", "nothing was written"), ("stream reset", "the outcome is unknown")],
)
async def test_an_unreachable_etcd_fails_the_txn_it_was_sent_and_the_rest_goes_unattempted(
    details: str, outcome: str
) -> None:
    etcd = MemoryEtcd(down=details)
    packer = TxnPacker(KEYSPACE, max_ops=2)
    (outcomes,) = await packer.commit(etcd.txn, [[Put(EP, f"ns/k{i}", b"v") for i in range(5)]])
    assert all(isinstance(o, DatastoreUnavailable) for o in outcomes)
    assert all("etcd at memory is unavailable" in str(o) for o in outcomes)
    assert all(outcome in str(o) and "not attempted" not in str(o) for o in outcomes[:2]), "the txn sent"
    assert all("this write was not attempted: nothing was written" in str(o) for o in outcomes[2:])
    assert etcd.kvs == {}
