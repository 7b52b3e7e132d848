"""The SQLite datastore against a dictionary model, over random sequences of operations (hypothesis)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from epsync.store.base import (
    Change,
    Committed,
    Conflict,
    Delete,
    Kind,
    Put,
    Record,
    RevisionCompacted,
    Write,
    WriteResult,
)
from epsync.store.sqlite import SqliteDatastore

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
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="epsync-model-"))
        self.loop = asyncio.new_event_loop()
        self.objects: dict[Key, Record] = {}
        self.revision = 0
        self.history: list[Change] = []  # every change ever, from revision 1
        self.oldest_floor = 0  # the store's oldest revision is at least this (explicit compactions)
        self.feed: list[Change] = []  # everything the listener was given, across restarts
        self.store = self.run(self.open_store())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def open_store(self) -> SqliteDatastore:
        store = SqliteDatastore(self.directory / "epsync.db", history_window=WINDOW)
        await store.open()
        store.add_listener(self.feed.extend)
        return store

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------ the model

    def resolve(self, spec: tuple[bool, Kind, str, bytes, str]) -> Write:
        is_put, kind, key, value, how = spec
        current = self.objects.get((kind, key))
        expected = {
            "none": None,
            "absent": 0,
            "current": current.mod_revision if current is not None else 0,
            "stale": (current.mod_revision if current is not None else 0) + 1000,
        }[how]
        if is_put:
            return Put(kind, key, value, expected)
        return Delete(kind, key, expected or None)

    def model_write(self, write: Write) -> WriteResult:
        current = self.objects.get((write.kind, write.key))
        expected = write.expected_mod_revision
        revision = self.revision + 1
        if isinstance(write, Put):
            if expected is not None and (current.mod_revision if current else 0) != expected:
                return Conflict(current)
            create = current.create_revision if current else revision
            record = Record(write.kind, write.key, write.value, create, revision)
            self.objects[(write.kind, write.key)] = record
            self.history.append(
                Change(revision, write.kind, write.key, write.value, current.value if current else None, create)
            )
            self.revision = revision
            return Committed(revision, record, current)
        if current is None or (expected is not None and current.mod_revision != expected):
            return Conflict(current)
        del self.objects[(write.kind, write.key)]
        self.history.append(Change(revision, write.kind, write.key, None, current.value, current.create_revision))
        self.revision = revision
        return Committed(revision, None, current)

    def apply_batch(self, specs: list[tuple[bool, Kind, str, bytes, str]]) -> tuple[list[Write], list[WriteResult]]:
        writes: list[Write] = []
        expected: list[WriteResult] = []
        for spec in specs:
            write = self.resolve(spec)
            writes.append(write)
            expected.append(self.model_write(write))
        return writes, expected

    def state_at(self, revision: int) -> dict[Key, bytes]:
        return replay({}, [c for c in self.history if c.revision <= revision])

    # ------------------------------------------------------------ rules

    @rule(batch=BATCHES)
    def write(self, batch: list[tuple[bool, Kind, str, bytes, str]]) -> None:
        writes, expected = self.apply_batch(batch)
        assert self.run(self.store.write(writes)) == expected

    @rule(batches=st.lists(BATCHES, min_size=2, max_size=6))
    def concurrent_writes(self, batches: list[list[tuple[bool, Kind, str, bytes, str]]]) -> None:
        # Calls made concurrently commit in the order they were made; the model applies them in that order.
        planned = [self.apply_batch(batch) for batch in batches]

        async def all_at_once() -> list[list[WriteResult]]:
            return list(await asyncio.gather(*(self.store.write(writes) for writes, _ in planned)))

        assert self.run(all_at_once()) == [expected for _, expected in planned]

    @rule()
    def restart(self) -> None:
        self.run(self.store.close())
        self.store = self.run(self.open_store())

    @rule(keep=st.integers(min_value=0, max_value=20))
    def compact(self, keep: int) -> None:
        before = self.store.oldest_revision
        oldest = self.run(self.store.compact(keep))
        assert oldest == max(before, self.revision - keep)
        self.oldest_floor = oldest

    @precondition(lambda self: self.store.oldest_revision > 0)
    @rule()
    def resuming_from_before_the_oldest_revision_is_refused(self) -> None:
        oldest = self.store.oldest_revision
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
        assert snapshot.revision == self.revision == self.store.current_revision
        assert snapshot.records == [self.objects[k] for k in sorted(self.objects)]

    @invariant()
    def the_listener_feed_replays_to_the_model(self) -> None:
        assert self.feed == self.history
        assert replay({}, self.feed) == {k: r.value for k, r in self.objects.items()}

    @invariant()
    def retained_history_rebuilds_the_state_from_the_oldest_revision(self) -> None:
        oldest = self.store.oldest_revision
        assert self.oldest_floor <= oldest <= max(self.oldest_floor, self.revision - WINDOW, 0)
        changes = self.run(self.store.changes_since(oldest))
        assert changes == [c for c in self.history if c.revision > oldest]
        assert replay(self.state_at(oldest), changes) == {k: r.value for k, r in self.objects.items()}


StoreModel.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_store_matches_the_model = StoreModel.TestCase
