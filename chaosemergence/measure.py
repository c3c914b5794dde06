"""Turn windowed counter increases into the numbers probes return.

`histogram_quantile` follows Prometheus' algorithm (linear interpolation inside the bucket
that holds the rank, the lower bound of the first bucket taken as 0, the +Inf bucket
answered with the highest finite bound), so the embedded path and the Prometheus path
agree on the same data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["bucket_counts", "histogram_quantile", "samples_total"]

Sample = Mapping[str, Any]


def samples_total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include every given label."""
    return sum(
        float(s["value"])
        for s in samples
        if s["name"] == name and all(s["labels"].get(k) == v for k, v in labels.items())
    )


def bucket_counts(samples: Iterable[Sample], name: str, **labels: str) -> dict[float, float]:
    """Cumulative bucket counts by upper bound, summed over every other label (`sum by (le)`)."""
    buckets: dict[float, float] = {}
    for s in samples:
        if s["name"] != f"{name}_bucket":
            continue
        if not all(s["labels"].get(k) == v for k, v in labels.items()):
            continue
        bound = float(s["labels"]["le"])
        buckets[bound] = buckets.get(bound, 0.0) + float(s["value"])
    return buckets


def histogram_quantile(quantile: float, buckets: Mapping[float, float]) -> float:
    """The `quantile` of a cumulative histogram; NaN when it holds no observation."""
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = quantile * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound if len(bounds) > 1 else math.nan
            if bound == bounds[0] and bound <= 0:
                return bound
            inside = count - previous_count
            if inside <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / inside
        previous_bound, previous_count = bound, count
    return previous_bound
