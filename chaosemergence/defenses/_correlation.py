"""Measure how synchronized the cells are: the largest pairwise correlation of their load."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations

from ._types import Clock

__all__ = [
    "CorrelationLevel",
    "CorrelationReading",
    "LoadSeries",
    "align",
    "correlation_level",
    "max_pairwise_correlation",
    "pearson",
]

#: The seed's correlation thresholds.
SAFE, WARNING, DANGER, CRITICAL = 0.3, 0.5, 0.7, 0.85


class CorrelationLevel(StrEnum):
    """Named bands between the seed's thresholds 0.3 / 0.5 / 0.7 / 0.85."""

    SAFE = "safe"  # below 0.3
    WATCH = "watch"  # 0.3 to 0.5
    WARNING = "warning"  # 0.5 to 0.7
    DANGER = "danger"  # 0.7 to 0.85
    CRITICAL = "critical"  # 0.85 and above


def correlation_level(c: float) -> CorrelationLevel:
    """Return the band that correlation ``c`` (in absolute value) falls in."""
    c = abs(c)
    if c < SAFE:
        return CorrelationLevel.SAFE
    if c < WARNING:
        return CorrelationLevel.WATCH
    if c < DANGER:
        return CorrelationLevel.WARNING
    if c < CRITICAL:
        return CorrelationLevel.DANGER
    return CorrelationLevel.CRITICAL


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Return Pearson's r of two equal-length series (0 when either is constant)."""
    n = min(len(xs), len(ys))
    if n < 2:
        return 0.0
    mx = math.fsum(xs[:n]) / n
    my = math.fsum(ys[:n]) / n
    sxy = sxx = syy = 0.0
    for x, y in zip(xs[:n], ys[:n], strict=True):
        dx, dy = x - mx, y - my
        sxy += dx * dy
        sxx += dx * dx
        syy += dy * dy
    if sxx <= 0.0 or syy <= 0.0:
        return 0.0
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


@dataclass(frozen=True, slots=True)
class CorrelationReading:
    """The largest absolute pairwise correlation, the pair it came from and its band."""

    value: float
    pair: tuple[str, str] | None
    level: CorrelationLevel

    def as_dict(self) -> dict[str, object]:
        """Return the reading as JSON-able data."""
        return {
            "value": self.value,
            "pair": list(self.pair) if self.pair else None,
            "level": self.level.value,
        }


def max_pairwise_correlation(series: Mapping[str, Sequence[float]]) -> CorrelationReading:
    """Return the worst-case (largest absolute) correlation over all pairs of series."""
    best = 0.0
    pair: tuple[str, str] | None = None
    for a, b in combinations(sorted(series), 2):
        r = abs(pearson(series[a], series[b]))
        if r > best:
            best, pair = r, (a, b)
    return CorrelationReading(best, pair, correlation_level(best))


class LoadSeries:
    """Count one source's self-generated calls in fixed time buckets over a window.

    Bucket indices are absolute (``time // bucket_seconds``) so series recorded in
    different processes with the same wall clock can be aligned with ``align``.
    """

    def __init__(
        self,
        bucket_seconds: float = 0.25,
        window_seconds: float = 30.0,
        *,
        clock: Clock = time.time,
    ) -> None:
        if bucket_seconds <= 0 or window_seconds < 2 * bucket_seconds:
            msg = f"need bucket_seconds > 0 and a window of 2+ buckets, got {bucket_seconds=}"
            raise ValueError(msg)
        self.bucket_seconds = bucket_seconds
        self.size = int(window_seconds / bucket_seconds)
        self._clock = clock
        # Guarded by the event loop: counts keyed by absolute bucket index, pruned to size.
        self._counts: dict[int, float] = {}

    def record(self, amount: float = 1.0) -> None:
        """Count ``amount`` calls now."""
        index = int(self._clock() // self.bucket_seconds)
        self._counts[index] = self._counts.get(index, 0.0) + amount
        if len(self._counts) > 2 * self.size:
            cutoff = index - self.size
            self._counts = {k: v for k, v in self._counts.items() if k > cutoff}

    def series(self) -> tuple[int, list[float]]:
        """Return (index of the last complete bucket, counts of the complete buckets)."""
        end = int(self._clock() // self.bucket_seconds) - 1
        return end, [self._counts.get(i, 0.0) for i in range(end - self.size + 1, end + 1)]

    def reset(self) -> None:
        """Forget every count."""
        self._counts.clear()


def align(series: Mapping[str, tuple[int, Sequence[float]]]) -> dict[str, list[float]]:
    """Trim ``LoadSeries.series()`` results from several sources to their common buckets."""
    if not series:
        return {}
    end = min(e for e, _ in series.values())
    start = max(e - len(values) + 1 for e, values in series.values())
    aligned: dict[str, list[float]] = {}
    for name, (e, values) in series.items():
        first = e - len(values) + 1
        aligned[name] = [float(v) for v in values[start - first : end - first + 1]]
    return aligned
