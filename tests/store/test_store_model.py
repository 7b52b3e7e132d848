"""Every datastore against a dictionary model, over random sequences of operations (hypothesis).

The model predicts each write's result except its revision, which it takes from the store and
checks: revisions follow the order of the writes, a revision never changes one key twice, and on
SQLite every successful write gets the next revision of its own. etcd may give the writes of one
transaction (of one call or of concurrent calls) one revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from epsync.store.base import (
    Change,
    Committed,
    Conflict,
    Datastore,
    Delete,
    Kind,
    Put,
    Record,
    RevisionCompacted,
    Write,
    WriteResult,
)
from tests.store.conftest import Backend

T = TypeVar("T")

WINDOW = 12  # small, so automatic compaction happens within a run
KINDS = st.sampled_from(list(Kind))
KEYS = st.sampled_from(["a", "b", "ns/c", "ns/d"])
VALUES = st.binary(max_size=6)
# How a write's precondition is chosen, resolved against the model when the write is applied.
PRECONDITIONS = st.sampled_from(["none", "absent", "current", "stale"])
WRITE_SPECS = st.tuples(st.booleans(), KINDS, KEYS, VALUES, PRECONDITIONS)
BATCHES = st.lists(WRITE_SPECS, min_size=1, max_size=5)

Key = tuple[Kind, str]


def replay(state: dict[Key, bytes], changes: Sequence[Change]) -> dict[Key, bytes]:
    result = dict(state)
    for change in changes:
        if change.value is None:
            del result[(change.kind, change.key)]
        else:
            result[(change.kind, change.key)] = change.value
    return result


class StoreModel(RuleBasedStateMachine):
    backend: Backend  # set by the test that runs the machine

    def __init__(self) -> None:
        super().__init__()
        self.sqlite = self.backend.embedded
        self.location = self.backend.location()
        self.loop = asyncio.new_event_loop()
        self.objects: dict[Key, Record] = {}
        self.history: list[Change] = []  # every change ever, from the store's first revision
        self.oldest_floor = 0  # the store's oldest revision is at least this (explicit compactions)
        self.feed: list[Change] = []  # everything the listener was given, across restarts
        self.store = self.run(self.open_store())
        self.revision = self.store.current_revision  # the last revision a write was given

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def open_store(self) -> Datastore:
        options = {"history_window": WINDOW} if self.sqlite else {}
        store = self.backend.make(self.location, **options)
        await store.open()
        store.add_listener(self.feed.extend)
        return store

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()

    # ------------------------------------------------------------ the model

    def plan(self, specs: list[tuple[bool, Kind, str, bytes, str]]) -> list[Write]:
        """Turn specs into writes, each resolved against the state the writes before it leave.

        On SQLite that state is known exactly (every success takes the next revision). On etcd the
        revision an earlier write of the plan gets is not known in advance, so a "current"
        precondition on a key the plan already changed becomes unconditional, and "stale" a
        revision no key has.
        """
        shadow: dict[Key, int | None] = {k: r.mod_revision for k, r in self.objects.items()}  # None: unknown
        revision = self.revision
        writes: list[Write] = []
        for is_put, kind, key, value, how in specs:
            name = (kind, key)
            known = name not in shadow or shadow[name] is not None
            current = shadow.get(name) or 0
            if how == "current" and not known:
                expected: int | None = None
            else:
                expected = {"none": None, "absent": 0, "current": current, "stale": current + 10**12}[how]
            write: Write = Put(kind, key, value, expected) if is_put else Delete(kind, key, expected or None)
            writes.append(write)
            exists = name in shadow
            if is_put:
                succeeds = expected is None or (known and current == expected) or (expected == 0 and not exists)
            else:
                succeeds = exists and (expected is None or (known and current == expected))
            if not succeeds:
                continue
            revision += 1
            if is_put:
                shadow[name] = revision if self.sqlite else None
            else:
                del shadow[name]
        return writes

    def check_write(self, write: Write, actual: WriteResult, shared: set[Key]) -> None:
        """Judge `write` against the model, check the store's `actual` result, and apply it to the model.

        `shared`: the keys changed at the model's last revision (a revision never changes one twice).
        """
        current = self.objects.get((write.kind, write.key))
        expected = write.expected_mod_revision
        name = (write.kind, write.key)
        if isinstance(write, Put):
            conflict = expected is not None and (current.mod_revision if current else 0) != expected
        else:
            conflict = current is None or (expected is not None and current.mod_revision != expected)
        if conflict:
            assert actual == Conflict(current)
            return
        assert isinstance(actual, Committed), (write, actual)
        revision = actual.revision
        if self.sqlite:
            assert revision == self.revision + 1, "SQLite gives every write the next revision of its own"
        else:
            assert revision >= self.revision, "revisions follow the order of the writes"
        if revision > self.revision:
            shared.clear()
        assert name not in shared, "a revision changed one key twice"
        shared.add(name)
        self.revision = revision
        if isinstance(write, Put):
            create = current.create_revision if current else revision
            record = Record(write.kind, write.key, write.value, create, revision)
            assert actual == Committed(revision, record, current)
            self.objects[name] = record
            self.history.append(
                Change(revision, write.kind, write.key, write.value, current.value if current else None, create)
            )
        else:
            assert current is not None
            assert actual == Committed(revision, None, current)
            del self.objects[name]
            self.history.append(Change(revision, write.kind, write.key, None, current.value, current.create_revision))

    def check_calls(self, calls: list[list[Write]], outcomes: list[list[WriteResult]]) -> None:
        shared: set[Key] = set()
        for writes, results in zip(calls, outcomes, strict=True):
            assert len(results) == len(writes)
            for write, result in zip(writes, results, strict=True):
                self.check_write(write, result, shared)

    def state_at(self, revision: int) -> dict[Key, bytes]:
        return replay({}, [c for c in self.history if c.revision <= revision])

    # ------------------------------------------------------------ rules

    @rule(batch=BATCHES)
    def write(self, batch: list[tuple[bool, Kind, str, bytes, str]]) -> None:
        writes = self.plan(batch)
        self.check_calls([writes], [self.run(self.store.write(writes))])

    @rule(batches=st.lists(BATCHES, min_size=2, max_size=6))
    def concurrent_writes(self, batches: list[list[tuple[bool, Kind, str, bytes, str]]]) -> None:
        # Calls made concurrently commit in the order they were made; the model judges them in that order.
        flat = self.plan([spec for batch in batches for spec in batch])
        calls: list[list[Write]] = []
        for batch in batches:
            calls.append(flat[: len(batch)])
            flat = flat[len(batch) :]

        async def all_at_once() -> list[list[WriteResult]]:
            return list(await asyncio.gather(*(self.store.write(writes) for writes in calls)))

        self.check_calls(calls, self.run(all_at_once()))

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(self.open_store())

    @rule(keep=st.integers(min_value=0, max_value=20))
    def compact(self, keep: int) -> None:
        before, current = self.store.oldest_revision, self.store.current_revision
        oldest = self.run(self.store.compact(keep))
        assert oldest == max(before, current - keep)
        self.oldest_floor = oldest

    # Not a precondition: etcd's oldest revision depends on what other tests did to the shared etcd,
    # and hypothesis needs the rules it may choose to depend on its own draws only.
    @rule()
    def resuming_from_before_the_oldest_revision_is_refused(self) -> None:
        oldest = self.store.oldest_revision
        if oldest == 0:
            return  # nothing compacted and no history start: every revision is servable
        with pytest.raises(RevisionCompacted) as raised:
            self.run(self.store.changes_since(oldest - 1))
        assert raised.value.oldest == oldest

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        kind, key = data.draw(KINDS), data.draw(KEYS)
        assert self.run(self.store.get(kind, key)) == self.objects.get((kind, key))

    # ------------------------------------------------------------ invariants

    @invariant()
    def snapshot_matches_the_model(self) -> None:
        snapshot = self.run(self.store.snapshot())
        assert snapshot.revision == self.store.current_revision
        if self.sqlite:
            assert snapshot.revision == self.revision
        else:
            assert snapshot.revision >= self.revision  # a restart reads at etcd's revision
        assert snapshot.records == [self.objects[k] for k in sorted(self.objects)]

    @invariant()
    def the_listener_feed_replays_to_the_model(self) -> None:
        assert self.feed == self.history
        assert replay({}, self.feed) == {k: r.value for k, r in self.objects.items()}

    @invariant()
    def retained_history_rebuilds_the_state_from_the_oldest_revision(self) -> None:
        oldest = self.store.oldest_revision
        assert self.oldest_floor <= oldest
        if self.sqlite:  # SQLite compacts by itself to its window
            assert oldest <= max(self.oldest_floor, self.revision - WINDOW, 0)
        changes = self.run(self.store.changes_since(oldest))
        assert changes == [c for c in self.history if c.revision > oldest]
        assert replay(self.state_at(oldest), changes) == {k: r.value for k, r in self.objects.items()}


def test_store_matches_the_model(backend: Backend) -> None:
    machine = type("StoreModelOn" + backend.name.title(), (StoreModel,), {"backend": backend})
    examples = 60 if backend.embedded else 20  # an etcd history read waits for etcd's 100 ms sync
    run_state_machine_as_test(machine, settings=settings(max_examples=examples, stateful_step_count=25, deadline=None))
