"""Periodic jobs: every timer keeps its own phase; only a common failure lines timers up."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable

import pytest

from chaosemergence.app.jobs import PeriodicJob
from chaosemergence.defenses import Jitter
from chaosemergence.defenses.detect import max_pairwise_correlation

JITTER = Jitter("uniform", 0.5, random.Random(2))


class VirtualTime:
    """A clock and a sleep for many jobs at once: time jumps to the next wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def run_until(self, end: float) -> None:
        while True:
            for _ in range(10):  # let every woken job reach its next sleep
                await asyncio.sleep(0)
            if not self._sleepers or self._sleepers[0][0] > end:
                self.now = end
                return
            at, _, future = heapq.heappop(self._sleepers)
            self.now = at
            future.set_result(None)


def _job(
    clock: VirtualTime,
    work: Callable[[], Awaitable[bool | None]],
    naive: Callable[[], bool],
    rng: random.Random,
    retry_delay: float | None = 0.2,
) -> PeriodicJob:
    return PeriodicJob(
        "job",
        2.0,
        work,
        jitter=lambda: JITTER,
        naive=naive,
        rng=rng,
        retry_delay=retry_delay,
        clock=clock,
        sleep=clock.sleep,
    )


async def _nothing() -> bool:
    return True


def test_a_naive_timer_runs_a_fixed_interval_after_its_last_run_started() -> None:
    """Naive: exactly the interval from the start of the last run, however long it took."""
    clock = VirtualTime()
    job = _job(clock, _nothing, lambda: True, random.Random(3))
    job.next_wait(0.0, True)  # the timer was naive from the start
    clock.now = 0.3  # the run took 0.3 s
    assert job.next_wait(0.0, True) == pytest.approx(1.7)
    clock.now = 2.5  # a run longer than the interval: the next one is due at once
    assert job.next_wait(0.0, True) == 0.0


def test_a_failed_run_is_retried_after_the_fixed_delay() -> None:
    """A job that retries waits its retry delay after a failure, not the interval."""
    clock = VirtualTime()
    job = _job(clock, _nothing, lambda: True, random.Random(3))
    job.next_wait(0.0, True)
    assert job.next_wait(0.0, False) == 0.2 and job.retries == 1
    no_retry = _job(clock, _nothing, lambda: True, random.Random(3), retry_delay=None)
    no_retry.next_wait(0.0, True)
    assert no_retry.next_wait(0.0, False) == pytest.approx(2.0)


def test_jittered_timers_spread_around_the_interval() -> None:
    """A jittered interval is drawn around the nominal one, never the same twice."""
    clock = VirtualTime()
    job = _job(clock, _nothing, lambda: False, random.Random(3))
    draws = [job.next_wait(0.0, True) for _ in range(200)]
    assert min(draws) >= 1.0 and max(draws) <= 3.0
    assert len({round(d, 3) for d in draws}) > 100


def test_a_timer_leaving_lockstep_takes_a_random_phase() -> None:
    """Back from naive to jittered: the next wait is a fresh random phase, once."""
    clock = VirtualTime()
    naive = [True]
    job = _job(clock, _nothing, lambda: naive[0], random.Random(3))
    assert job.next_wait(0.0, True) == pytest.approx(2.0)
    naive[0] = False
    first = job.next_wait(0.0, True)
    assert 0 <= first < 2.0 and job.rephased == 1
    assert 1.0 <= job.next_wait(0.0, True) <= 3.0 and job.rephased == 1


def _arrivals_per_bucket(arrivals: list[float], end: float, bucket: float) -> list[float]:
    counts = [0.0] * int(end / bucket)
    for at in arrivals:
        if at < end:
            counts[int(at / bucket)] += 1
    return counts


async def _timeline(outage: tuple[float, float] | None, end: float) -> dict[str, list[float]]:
    """Four cells of eight naive pollers each; the shared dependency fails during `outage`."""
    clock = VirtualTime()
    rng = random.Random(11)
    arrivals: dict[str, list[float]] = {str(cell): [] for cell in range(4)}
    tasks = []
    for cell in range(4):

        async def poll(cell: int = cell) -> bool:
            arrivals[str(cell)].append(clock.now)
            return outage is None or not outage[0] <= clock.now < outage[1]

        for _ in range(8):
            tasks.append(asyncio.create_task(_job(clock, poll, lambda: True, rng).run()))
    await clock.run_until(end)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        cell: _arrivals_per_bucket([a for a in times if a >= end - 10], end, 0.0625)[-160:]
        for cell, times in arrivals.items()
    }


def test_without_a_common_event_naive_timers_do_not_correlate() -> None:
    """No jitter and no outage: every poller keeps its random phase, correlation stays low."""
    series = asyncio.run(_timeline(None, 60.0))
    assert max_pairwise_correlation(series).value < 0.5


def test_an_outage_every_poller_retries_through_aligns_them_for_good() -> None:
    """After a 3 s outage, pollers retrying on the same fixed delay come back in step, and
    stay in step: their next polls are due a fixed interval after the same instants."""
    series = asyncio.run(_timeline((20.0, 23.0), 60.0))
    assert max_pairwise_correlation(series).value > 0.9
