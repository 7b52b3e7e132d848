"""The datastore's values (store/base.py) as the internal protocol's messages, and back."""

from __future__ import annotations

from collections.abc import Sequence

from epsync.internal.v1 import store_pb2 as pb
from epsync.store.base import (
    KIND_OF_VALUE,
    Change,
    Committed,
    Conflict,
    DatastoreError,
    DatastoreFull,
    DatastoreUnavailable,
    Delete,
    Kind,
    Put,
    Record,
    Write,
    WriteResult,
)
from epsync.store.feed import Outcomes


def kind_of(name: str) -> Kind:
    kind = KIND_OF_VALUE.get(name)
    if kind is None:
        raise DatastoreError(f"the owner process sent an unknown kind {name[:64]!r}")
    return kind


def record_to_pb(record: Record) -> pb.Record:
    return pb.Record(
        kind=record.kind.value,
        key=record.key,
        value=record.value,
        create_revision=record.create_revision,
        mod_revision=record.mod_revision,
    )


def record_from_pb(message: pb.Record) -> Record:
    return Record(kind_of(message.kind), message.key, message.value, message.create_revision, message.mod_revision)


def change_to_pb(change: Change) -> pb.Change:
    return pb.Change(
        revision=change.revision,
        kind=change.kind.value,
        key=change.key,
        value=change.value,
        previous=change.previous,
        create_revision=change.create_revision,
        previous_revision=change.previous_revision,
    )


def change_from_pb(message: pb.Change) -> Change:
    return Change(
        message.revision,
        kind_of(message.kind),
        message.key,
        message.value if message.HasField("value") else None,
        message.previous if message.HasField("previous") else None,
        message.create_revision,
        message.previous_revision if message.HasField("previous_revision") else None,
    )


def changes_from_pb(messages: Sequence[pb.Change]) -> list[Change]:
    return [change_from_pb(m) for m in messages]


def write_to_pb(write: Write) -> pb.Write:
    return pb.Write(
        kind=write.kind.value,
        key=write.key,
        value=write.value if isinstance(write, Put) else None,
        expected_mod_revision=write.expected_mod_revision,
    )


def write_from_pb(message: pb.Write) -> Write:
    kind = kind_of(message.kind)
    expected = message.expected_mod_revision if message.HasField("expected_mod_revision") else None
    if message.HasField("value"):
        return Put(kind, message.key, message.value, expected)
    return Delete(kind, message.key, expected)


def outcome_to_pb(outcome: WriteResult | Exception) -> pb.WriteOutcome:
    if isinstance(outcome, Committed):
        return pb.WriteOutcome(
            committed=pb.Committed(
                revision=outcome.revision,
                record=None if outcome.record is None else record_to_pb(outcome.record),
                previous=None if outcome.previous is None else record_to_pb(outcome.previous),
            )
        )
    if isinstance(outcome, Conflict):
        current = None if outcome.current is None else record_to_pb(outcome.current)
        return pb.WriteOutcome(conflict=pb.Conflict(current=current))
    unavailable, full = isinstance(outcome, DatastoreUnavailable), isinstance(outcome, DatastoreFull)
    return pb.WriteOutcome(failure=pb.Failure(message=str(outcome), unavailable=unavailable, full=full))


def outcome_from_pb(message: pb.WriteOutcome) -> WriteResult | Exception:
    which = message.WhichOneof("outcome")
    if which == "committed":
        committed = message.committed
        return Committed(
            committed.revision,
            record_from_pb(committed.record) if committed.HasField("record") else None,
            record_from_pb(committed.previous) if committed.HasField("previous") else None,
        )
    if which == "conflict":
        conflict = message.conflict
        return Conflict(record_from_pb(conflict.current) if conflict.HasField("current") else None)
    failure = message.failure
    if failure.full:
        return DatastoreFull(failure.message)
    return DatastoreUnavailable(failure.message) if failure.unavailable else DatastoreError(failure.message)


def outcomes_from_pb(messages: Sequence[pb.WriteOutcome]) -> Outcomes:
    return [outcome_from_pb(m) for m in messages]
