"""Counts of observed values in fixed buckets, kept by the server as it works and turned into Prometheus
histograms only when scraped (server/metrics.py): observing is an index lookup and two additions."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class Histogram:
    """Counts of values under each bound (the last bucket: above every bound) and their sum, for the metrics."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def mean(self) -> float:
        count = sum(self.counts)
        return self.total / count if count else 0.0
