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

__all__ = [
    "OPTIONAL_ROUTES",
    "USER_CRITICAL_ROUTES",
    "bucket_counts",
    "failed_count",
    "histogram_quantile",
    "percent_degraded",
    "percent_failed",
    "samples_total",
]

Sample = Mapping[str, Any]

#: Paths whose refusals (429 sheds) users feel as failures: payments and profiles.
USER_CRITICAL_ROUTES = ("payments", "profile")
#: Optional features: a shed one is degraded on purpose, not failed.
OPTIONAL_ROUTES = ("recommendations",)
REQUESTS = "emergence_requests_total"


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


def failed_count(samples: Iterable[Sample], **labels: str) -> float:
    """Requests users saw fail: errors anywhere, sheds on the user-critical paths."""
    samples = list(samples)
    failed = samples_total(samples, REQUESTS, outcome="failure", **labels)
    for route in USER_CRITICAL_ROUTES:
        if labels.get("route", route) == route:
            failed += samples_total(samples, REQUESTS, outcome="shed", **{**labels, "route": route})
    return failed


def percent_failed(samples: Iterable[Sample], **labels: str) -> float:
    """The failure radius: % of the requests matching `labels` that users saw fail (0 when
    there were none; callers that must not pass on an empty window check the count first)."""
    samples = list(samples)
    total = samples_total(samples, REQUESTS, **labels)
    return round(100.0 * failed_count(samples, **labels) / total, 3) if total else 0.0


def percent_degraded(samples: Iterable[Sample]) -> float:
    """% of requests answered degraded on purpose: optional features shed."""
    samples = list(samples)
    total = samples_total(samples, REQUESTS)
    shed = sum(
        samples_total(samples, REQUESTS, outcome="shed", route=route) for route in OPTIONAL_ROUTES
    )
    return round(100.0 * shed / total, 3) if total else 0.0
