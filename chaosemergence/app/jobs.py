"""The cell's own schedule: periodic jobs on timers of their own, naive or jittered.

Every job starts at a random phase and keeps it: its next run is due a fixed interval after
its last run started (the last attempt that succeeded, for a job that retries), so nothing
about removing jitter lines two jobs up. A job whose work can fail (``retry_delay`` set)
tries again after a short delay until it succeeds, as a naive configuration poller does:
fixed delays while the timers are naive, drawn from the cell's jitter otherwise.

That is also how cells fall in step: a failure every job sees at once (an outage of the
dependency they share) makes all of them retry on the same short delay, so their first
successful attempts, and every run after it, start together.

A naive timer draws nothing. A jittered one draws each interval and retry delay from the
``Jitter`` the cell gives it now (the jitter defense's, whose factor the control loop raises
when the cells' load correlates, or a plain one). A job leaving naive mode (jitter put back
by the defense) takes a fresh random phase: phase randomization, without which the cells
would stay in step for many periods, jitter only moving them apart slowly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chaosemergence.defenses import Jitter

__all__ = ["PeriodicJob"]

logger = logging.getLogger("chaosemergence.cell")


class PeriodicJob:
    """Run ``work`` every ``interval`` seconds from its own phase; retry failures if asked.

    ``work`` returns False (or raises) when it failed. With ``retry_delay`` None a failed run
    simply waits for the next one.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[bool | None]],
        *,
        jitter: Callable[[], Jitter],
        naive: Callable[[], bool],
        rng: random.Random,
        retry_delay: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.interval = interval
        self.retry_delay = retry_delay
        self._work = work
        self._jitter = jitter
        self._naive = naive
        self._rng = rng
        self._clock = clock
        self._sleep = sleep
        # Event loop only.
        self.runs = 0
        self.errors = 0
        self.retries = 0
        self.rephased = 0
        self._was_naive = False

    def _draw(self, nominal: float) -> float:
        """``nominal`` as the timer draws it now: exact when naive, jittered otherwise."""
        return nominal if self._naive() else self._jitter().apply(nominal)

    def _leaving_lockstep(self) -> bool:
        naive = self._naive()
        was_naive, self._was_naive = self._was_naive, naive
        return was_naive and not naive

    def next_wait(self, started: float, succeeded: bool) -> float:
        """Seconds to wait after a run that started at ``started`` (clock seconds)."""
        if self._leaving_lockstep():
            # Phase randomization: a fresh phase, as at start-up.
            self.rephased += 1
            return self._rng.uniform(0, self.interval)
        if not succeeded and self.retry_delay is not None:
            self.retries += 1
            return self._draw(self.retry_delay)
        return max(0.0, started + self._draw(self.interval) - self._clock())

    async def run_once(self) -> bool:
        """One run of ``work``; True when it succeeded."""
        self.runs += 1
        try:
            return await self._work() is not False
        except Exception:
            self.errors += 1
            logger.exception("periodic job %s failed", self.name)
            return False

    async def run(self) -> None:
        # Phase randomization at start-up.
        self._was_naive = self._naive()
        await self._sleep(self._rng.uniform(0, self.interval))
        while True:
            started = self._clock()
            succeeded = await self.run_once()
            await self._sleep(self.next_wait(started, succeeded))
