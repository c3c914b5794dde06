"""Tests for the synchronization measurement."""

from __future__ import annotations

import math
import random

import pytest

from chaosemergence.defenses.detect import (
    CorrelationLevel,
    LoadSeries,
    align,
    correlation_level,
    max_pairwise_correlation,
    pearson,
)

from .conftest import FakeClock


def test_pearson_extremes() -> None:
    """Identical series correlate 1, mirrored -1, constant 0."""
    xs = [1.0, 2.0, 3.0, 4.0]
    assert pearson(xs, xs) == pytest.approx(1.0)
    assert pearson(xs, [-x for x in xs]) == pytest.approx(-1.0)
    assert pearson(xs, [5.0] * 4) == 0.0


def test_largest_pair_wins() -> None:
    """The reading is the largest absolute correlation and names its pair."""
    rng = random.Random(1)
    wave = [math.sin(i / 3) for i in range(200)]
    series = {
        "cell-0": wave,
        "cell-1": [w + rng.gauss(0, 0.05) for w in wave],
        "cell-2": [rng.random() for _ in range(200)],
    }
    reading = max_pairwise_correlation(series)
    assert reading.pair == ("cell-0", "cell-1")
    assert reading.value > 0.95
    assert reading.level is CorrelationLevel.CRITICAL


@pytest.mark.parametrize(
    ("c", "level"),
    [(0.1, "safe"), (0.3, "watch"), (0.5, "warning"), (0.7, "danger"), (0.85, "critical")],
)
def test_levels_at_seed_thresholds(c: float, level: str) -> None:
    """0.3 / 0.5 / 0.7 / 0.85 separate the named levels."""
    assert correlation_level(c).value == level


def test_load_series_synchronized_vs_jittered() -> None:
    """Two timers firing in phase correlate highly; with random phases they do not."""
    clock = FakeClock(0.0)
    rng = random.Random(2)
    a, b, c = (LoadSeries(0.25, 30.0, clock=clock) for _ in range(3))
    t = 0.0
    events = []
    for k in range(30):
        events.append((k * 1.0, a))
        events.append((k * 1.0 + 0.01, b))
        events.append((k * 1.0 + rng.uniform(0, 1.0) + rng.uniform(-0.3, 0.3), c))
    for t, series in sorted(events, key=lambda e: e[0]):
        clock.now = t
        series.record()
    clock.now = 31.0
    aligned = align({"a": a.series(), "b": b.series(), "c": c.series()})
    assert len({len(v) for v in aligned.values()}) == 1
    assert pearson(aligned["a"], aligned["b"]) > 0.9
    assert abs(pearson(aligned["a"], aligned["c"])) < 0.5


def test_align_trims_to_common_buckets() -> None:
    """Series ending at different buckets are cut to their overlap."""
    aligned = align({"x": (10, [1, 2, 3]), "y": (11, [4, 5, 6])})
    assert aligned == {"x": [2.0, 3.0], "y": [4.0, 5.0]}
