"""Garbage-collector settings for the long-running processes that allocate fast: the server, and
the load test's generators and raw server (which must not be what limits a measurement).

The youngest generation is collected after `YOUNG_THRESHOLD` net allocations of tracked objects,
not CPython's 700. A write's short-lived objects (tasks, futures, buffered chunks, decoded
messages) then die by reference count before a collection sees them, instead of being promoted
until the oldest generation fills and a full collection stops the event loop. Measured with
`epsync bench` scenario 1 (100,000 endpoints, 1,000 writes/s): 35 full collections of ~100 ms in
a minute and a p99 of 315 ms before; 3 and 83 ms after.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def apply() -> None:
    """Collect the youngest generation less often; the older generations keep their settings."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_startup() -> None:
    """Once start-up has filled the cache (with the retained history, some hundreds of thousands of objects that
    live long): collect once, then leave those objects out of every later collection. A full collection would
    otherwise walk them each time, some 50 ms with a full default window (bench/bench_resume_history.py);
    they are still freed by reference count when the history moves on."""
    gc.collect()
    gc.freeze()
