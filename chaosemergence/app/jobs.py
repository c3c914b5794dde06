"""The cell's own schedule: periodic jobs whose timers are jittered, or naively aligned.

A naive timer fires on the wall-clock grid (every cell at the same instant), which is what
real fixed-interval timers drift into and what ``remove_all_jitter`` injects. A jittered
timer draws each interval from the ``Jitter`` the cell gives it now (the jitter defense's,
whose factor the control loop raises when the cells' load correlates, or a plain one).
Every job starts at a random phase, and takes a new random phase when its timer leaves
lockstep (jitter restored): otherwise the cells would stay in step for many periods,
jitter only moving them apart slowly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chaosemergence.defenses import Jitter

__all__ = ["PeriodicJob", "aligned_delay"]

logger = logging.getLogger("chaosemergence.cell")


def aligned_delay(now: float, interval: float) -> float:
    """Seconds until just after the next multiple of ``interval`` on the wall clock."""
    return interval - (now % interval) + 1e-3


class PeriodicJob:
    """Run ``work`` every ``interval`` seconds, jittered unless ``naive()`` says otherwise."""

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[None]],
        *,
        jitter: Callable[[], Jitter],
        naive: Callable[[], bool],
        rng: random.Random,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval = interval
        self._work = work
        self._jitter = jitter
        self._naive = naive
        self._rng = rng
        self._wall = wall_clock
        self._sleep = sleep
        self.runs = 0
        self.errors = 0
        self.rephased = 0
        self._was_naive = False

    def next_interval(self) -> float:
        naive = self._naive()
        was_naive, self._was_naive = self._was_naive, naive
        if naive:
            return aligned_delay(self._wall(), self.interval)
        if was_naive:
            # Leaving lockstep: phase randomization, as at start-up.
            self.rephased += 1
            return self._rng.uniform(0, self.interval)
        return self._jitter().apply(self.interval)

    async def run(self) -> None:
        # Phase randomization at start-up.
        await self._sleep(self._rng.uniform(0, self.interval))
        while True:
            self.runs += 1
            try:
                await self._work()
            except Exception:
                self.errors += 1
                logger.exception("periodic job %s failed", self.name)
            await self._sleep(self.next_interval())
