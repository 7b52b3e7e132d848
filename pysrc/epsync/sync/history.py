"""Every state an object had within the retained window, so events can be built at past revisions.

A watcher resuming from revision R is replayed the events it would have seen live, and those
carry each object as it was at the event's revision. The cache only holds the present, so this
keeps, per object changed within the window, its states as the datastore stored them (bytes,
without resource_version) with the revision each state began at; an object not changed within
the window is as the cache has it now.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

# (revision the state began at, stored bytes; None while the object did not exist)
State = tuple[int, bytes | None]


@dataclass(frozen=True, slots=True)
class Transition:
    revision: int
    key: str
    before: State
    after: State


class ObjectHistory:
    """States by key for the retained window; see the module docs."""

    def __init__(self) -> None:
        # key -> states in revision order; the first is the state before the oldest retained change.
        self._states: dict[str, list[State]] = {}
        # (revision, key) of every retained change from `_head` on; a list, not a deque, so that
        # bisect can index it in O(1). The trimmed prefix is cut off in bulk.
        self._order: list[tuple[int, str]] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._order) - self._head

    def record(self, key: str, revision: int, value: bytes | None, before: State) -> None:
        """Note that `key` changed to `value` at `revision`; `before` is its state until then."""
        states = self._states.get(key)
        if states is None:
            states = self._states[key] = [before]
        states.append((revision, value))
        self._order.append((revision, key))

    def tracks(self, key: str) -> bool:
        """Whether `key` changed within the window (if not, its state throughout is the current one)."""
        return key in self._states

    def state_at(self, key: str, revision: int) -> State:
        """The state of a tracked key in effect at `revision`."""
        states = self._states[key]
        index = bisect.bisect_right(states, revision, key=lambda state: state[0]) - 1
        return states[max(index, 0)]

    def transitions_after(self, revision: int) -> Iterator[Transition]:
        """Every retained change after `revision`, in revision order."""
        start = bisect.bisect_right(self._order, revision, lo=self._head, key=lambda change: change[0])
        for index in range(start, len(self._order)):
            change_revision, key = self._order[index]
            states = self._states[key]
            position = bisect.bisect_left(states, change_revision, lo=1, key=lambda state: state[0])
            yield Transition(change_revision, key, states[position - 1], states[position])

    def trim(self, up_to: int) -> None:
        """Forget changes at or before `up_to`, keeping each key's state as of `up_to` as its base."""
        order = self._order
        while self._head < len(order) and order[self._head][0] <= up_to:
            _, key = order[self._head]
            self._head += 1
            states = self._states[key]
            del states[0]  # the base goes; the change that ended it becomes the new base
            if len(states) == 1:
                del self._states[key]  # no retained change left: the current state is all there is
        if self._head > len(order) // 2:
            del order[: self._head]
            self._head = 0
