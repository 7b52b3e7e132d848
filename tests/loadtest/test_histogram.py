"""The latency histogram: bucket bounds, nearest-rank percentiles, exact merging across processes."""

from __future__ import annotations

import math
import random

import pytest
from bench.loadtest.histogram import Histogram, bucket_bounds, bucket_of
from hypothesis import given
from hypothesis import strategies as st


@given(st.integers(min_value=0, max_value=10**12))
def test_every_value_falls_within_its_bucket_which_is_at_most_one_64th_wide(value: int) -> None:
    low, high = bucket_bounds(bucket_of(value))
    assert low <= value <= high
    assert high - low <= max(0, low // 64)


def test_buckets_are_contiguous_and_ordered() -> None:
    previous_high = -1
    for index in range(2000):
        low, high = bucket_bounds(index)
        assert low == previous_high + 1
        assert bucket_of(low) == bucket_of(high) == index
        previous_high = high


def test_record_uses_the_same_buckets_as_bucket_of() -> None:
    for value in [*range(300), 1023, 1024, 1025, 10**6, 2**40 + 12345]:
        histogram = Histogram()
        histogram.record(value)
        assert histogram.counts == {bucket_of(value): 1}


@pytest.mark.parametrize("p", [1, 50, 90, 99, 99.9, 100])
def test_percentiles_are_nearest_rank_and_never_below_the_true_value(p: float) -> None:
    rng = random.Random(7)
    values = [int(rng.lognormvariate(8, 1.5)) for _ in range(20_001)]
    exact = sorted(values)[math.ceil(p / 100 * len(values)) - 1]
    reported = Histogram.of(values).percentile(p)
    assert exact <= reported <= exact + exact // 64


def test_small_values_are_exact_and_the_maximum_is_never_exceeded() -> None:
    histogram = Histogram.of([5, 1, 3, 2, 4])
    assert [histogram.percentile(p) for p in (20, 40, 60, 80, 100)] == [1, 2, 3, 4, 5]
    big = Histogram.of([1_000_001])
    assert big.percentile(50) == big.max == 1_000_001


def test_merging_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    parts = [[rng.randrange(10**7) for _ in range(rng.randrange(1, 500))] for _ in range(8)]
    merged = Histogram()
    for part in parts:
        merged.merge(Histogram.from_json(Histogram.of(part).to_json()))  # through JSON, as workers send them
    whole = Histogram.of([v for part in parts for v in part])
    assert merged.counts == whole.counts
    assert (merged.n, merged.total, merged.min, merged.max) == (whole.n, whole.total, whole.min, whole.max)


def test_empty_histogram_and_bad_percentile() -> None:
    empty = Histogram()
    assert empty.percentile(99) == 0
    assert empty.summary_ms()["count"] == 0
    merged = Histogram.of([10])
    merged.merge(empty)
    assert (merged.min, merged.max) == (10, 10)
    with pytest.raises(ValueError, match="percentile"):
        merged.percentile(0)


def test_negative_latencies_count_as_zero() -> None:
    histogram = Histogram.of([-5, 3])
    assert histogram.min == 0
    assert histogram.percentile(50) == 0
