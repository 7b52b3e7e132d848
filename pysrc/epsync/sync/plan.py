"""The plan of one committed batch: what the cache's apply hands the watch hubs to turn into events."""

from __future__ import annotations

from dataclasses import dataclass

from epsync.sync.history import Transition


@dataclass(frozen=True, slots=True)
class Applied:
    """What one committed batch changed, for the watch hubs to turn into events."""

    revision: int
    # From the Rust index, for each watcher group with events: its (revision, entries) chunks in
    # revision order, ready to send; each distinct event is one bytes object shared by every group.
    endpoint_deliveries: list[tuple[int, list[tuple[int, list[bytes]]]]]
    # How many distinct endpoint events were encoded.
    endpoint_events: int
    profile_transitions: list[Transition]
