"""Latency histograms that merge exactly across processes: log-linear buckets, as HdrHistogram keeps them.

Values are integer microseconds. Below 128 every value has its own bucket; above, each power of
two is split into 64 buckets, so a bucket's width is at most 1/64 (1.6%) of its values. Workers
send their counts (a sparse {bucket: count} map) once a second and the orchestrator adds them up,
so percentiles over all watchers of all processes come from one exact merge, not from averaging
per-process percentiles.

Percentiles use the nearest-rank definition: pXX is the smallest recorded value such that at least
XX% of the samples are at or below it, reported as the highest value of its bucket (never below the
true value, and never above the exact maximum, which is tracked separately).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

SUB_BUCKET_BITS = 6
_SUB = 1 << SUB_BUCKET_BITS  # 64
_EXACT = _SUB << 1  # values below 128 are exact


def bucket_of(value: int) -> int:
    """The bucket index of a non-negative integer value (negative values count as 0)."""
    if value < _EXACT:
        return max(value, 0)
    shift = value.bit_length() - (SUB_BUCKET_BITS + 1)
    return _SUB * shift + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall in bucket `index`."""
    if index < _EXACT:
        return index, index
    shift = index // _SUB - 1
    mantissa = index - _SUB * shift
    return mantissa << shift, ((mantissa + 1) << shift) - 1


class Histogram:
    """Counts of integer values (microseconds) in log-linear buckets, with exact count, sum, min and max."""

    __slots__ = ("counts", "max", "min", "n", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        value = max(value, 0)
        index = value if value < _EXACT else _SUB * (value.bit_length() - 7) + (value >> (value.bit_length() - 7))
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.n == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.n += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        if other.n:
            self.min = other.min if self.n == 0 else min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.n += other.n
        self.total += other.total

    def percentile(self, p: float) -> int:
        """The nearest-rank p-th percentile (0 < p <= 100); 0 for an empty histogram."""
        if self.n == 0:
            return 0
        if not 0 < p <= 100:
            raise ValueError(f"percentile {p} is not in (0, 100]")
        rank = max(1, math.ceil(p / 100 * self.n))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(bucket_bounds(index)[1], self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def summary_ms(self) -> dict[str, float]:
        """p50, p99, p99.9 and max in milliseconds, and the sample count."""
        return {
            "count": self.n,
            "p50_ms": self.percentile(50) / 1000,
            "p99_ms": self.percentile(99) / 1000,
            "p999_ms": self.percentile(99.9) / 1000,
            "max_ms": self.max / 1000,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "c": {str(k): v for k, v in self.counts.items()},
            "n": self.n,
            "s": self.total,
            "lo": self.min,
            "hi": self.max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        histogram = cls()
        histogram.counts = {int(k): int(v) for k, v in data["c"].items()}
        histogram.n = int(data["n"])
        histogram.total = int(data["s"])
        histogram.min = int(data["lo"])
        histogram.max = int(data["hi"])
        return histogram

    @classmethod
    def of(cls, values: Iterable[int]) -> Histogram:
        histogram = cls()
        for value in values:
            histogram.record(value)
        return histogram
