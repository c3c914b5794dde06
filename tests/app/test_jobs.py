"""Periodic jobs: naive timers fire on the wall-clock grid, jittered ones spread out."""

from __future__ import annotations

import random

import pytest

from chaosemergence.app.jobs import PeriodicJob, aligned_delay
from chaosemergence.defenses import Jitter

JITTER = Jitter("uniform", 0.5, random.Random(2))


async def _nothing() -> None:
    return None


def _job(naive: bool, now: float) -> PeriodicJob:
    return PeriodicJob(
        "job",
        0.5,
        _nothing,
        jitter=lambda: JITTER,
        naive=lambda: naive,
        rng=random.Random(3),
        wall_clock=lambda: now,
    )


def test_naive_timers_wait_for_the_next_grid_point() -> None:
    """Every cell's naive timer fires just after the same multiple of the interval."""
    assert aligned_delay(100.2, 0.5) == pytest.approx(0.301)
    assert _job(True, 100.2).next_interval() == pytest.approx(0.301)
    assert _job(True, 100.45).next_interval() == pytest.approx(0.051)


def test_jittered_timers_spread_around_the_interval() -> None:
    """A jittered interval is drawn around the nominal one, not on the grid."""
    job = _job(False, 100.2)
    draws = [job.next_interval() for _ in range(200)]
    assert min(draws) >= 0.25 and max(draws) <= 0.75
    assert len({round(d, 3) for d in draws}) > 100


def test_a_timer_leaving_lockstep_takes_a_random_phase() -> None:
    """Back from naive to jittered: the next wait is a fresh random phase, not the grid."""
    naive = [True]
    job = PeriodicJob(
        "job",
        0.5,
        _nothing,
        jitter=lambda: JITTER,
        naive=lambda: naive[0],
        rng=random.Random(3),
        wall_clock=lambda: 100.2,
    )
    assert job.next_interval() == pytest.approx(0.301)
    naive[0] = False
    first = job.next_interval()
    assert 0 <= first < 0.5 and job.rephased == 1
    assert 0.25 <= job.next_interval() <= 0.75 and job.rephased == 1
