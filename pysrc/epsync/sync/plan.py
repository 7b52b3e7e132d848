"""The plan of one committed batch: what the cache's apply hands the watch hubs to turn into events."""

from __future__ import annotations

from dataclasses import dataclass

from epsync.sync.history import Transition


@dataclass(frozen=True, slots=True)
class Applied:
    """What one committed batch changed, for the watch hubs to turn into events."""

    revision: int
    # The Rust index's plan: (namespace, name, revision, event type) subjects, and for each
    # watcher group with events the indices of its subjects in revision order.
    endpoint_subjects: list[tuple[str, str, int, int]]
    endpoint_deliveries: list[tuple[int, list[int]]]
    profile_transitions: list[Transition]
