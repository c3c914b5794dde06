"""One cell's timers: its periodic jobs and the jitter they (and its retries) draw from.

Removing jitter is a fault (``/admin/jitter``); it aligns nothing by itself, every timer
keeps its own phase. The jitter defense answers synchronization: maximum jitter while the
control loop's response is up, then putting removed jitter back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable

from chaosemergence.app.jobs import PeriodicJob
from chaosemergence.defenses import EventLog, Jitter

__all__ = ["CellTimers"]

logger = logging.getLogger("chaosemergence.cell")


class CellTimers:
    """The plain jitter, the jitter defense, whether jitter was removed, and the jobs.

    ``enabled`` is the cell's defense switches (read, never written, here).
    """

    def __init__(
        self,
        index: int,
        enabled: dict[str, bool],
        *,
        removed: bool,
        rng: random.Random,
        events: EventLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._enabled = enabled
        self._rng = rng
        self._clock = clock
        # Timers' plain jitter (what /admin/jitter removes and restores), and the jitter
        # defense: the same spread while calm, whose factor the control loop moves with the
        # measured correlation and forces to the maximum when the cells synchronize.
        self.base_jitter = Jitter("uniform", 0.25, rng=rng, name="base_jitter")
        self.jitter = Jitter(
            strategy="correlated",
            factor=0.5,
            rng=rng,
            adaptive_distribution="exponential",
            events=events,
        )
        self.removed = removed
        self.restored_by: str | None = None
        self.jobs: list[PeriodicJob] = []

    def add_job(
        self,
        name: str,
        interval: float,
        work: Callable[[], Awaitable[bool | None]],
        retry_delay: float | None = None,
    ) -> None:
        """A periodic job on this cell's timers (its phase and jitter drawn from them)."""
        self.jobs.append(
            PeriodicJob(
                name,
                interval,
                work,
                jitter=self.timer_jitter,
                naive=self.naive,
                rng=self._rng,
                retry_delay=retry_delay,
                clock=self._clock,
            )
        )

    def naive(self) -> bool:
        """Whether timers and backoffs run without jitter (fixed intervals and delays).

        Removing jitter is the fault; it aligns nothing by itself (every timer keeps its own
        phase). Only the jitter defense's response (maximum jitter, then putting it back)
        undoes it.
        """
        return self.removed and not (self._enabled["jitter"] and self.jitter.maximum)

    def active(self) -> bool:
        return not self.naive()

    def timer_jitter(self) -> Jitter:
        """The jitter the timers draw from: the defense's when it is on, else the plain one."""
        return self.jitter if self._enabled["jitter"] else self.base_jitter

    def set_jitter(self, enabled: bool) -> None:
        """``/admin/jitter``: remove the timers' jitter (the fault) or put it back."""
        self.removed = not enabled
        if not enabled:
            self.restored_by = None

    def restore(self, reason: str) -> None:
        """The jitter defense's answer to synchronization: put removed jitter back."""
        if self._enabled["jitter"] and self.removed:
            self.removed = False
            self.restored_by = reason
            logger.warning("cell %s: jitter restored by the control loop: %s", self._index, reason)

    def jobs_state(self) -> dict[str, dict[str, int]]:
        return {
            j.name: {
                "runs": j.runs,
                "errors": j.errors,
                "retries": j.retries,
                "rephased": j.rephased,
            }
            for j in self.jobs
        }
