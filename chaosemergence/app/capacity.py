"""A cell's own finite capacity: a pool of workers, each user request holding one.

Like a server's worker threads: a request waits for a free worker, holds it while it is
handled (plus a fixed CPU cost), and a full waiting line refuses at once. This is what
makes a cell overload when failover pushes other cells' users onto it (cascade).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

__all__ = ["CallerGaveUp", "CellCapacity", "CellOverloaded"]


class CellOverloaded(Exception):
    """Every worker is busy and the waiting line is full."""


class CallerGaveUp(Exception):
    """A worker became free only after the request's deadline: its caller has gone."""


class CellCapacity:
    """`workers` concurrent requests (0 = unlimited), each costing `cost_ms` of work."""

    def __init__(
        self,
        workers: int,
        cost_ms: float,
        queue_limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 0 or cost_ms < 0 or queue_limit < 0:
            raise ValueError(
                f"workers, cost_ms and queue_limit must be >= 0, got {workers}, {cost_ms}, "
                f"{queue_limit}"
            )
        self.workers = workers
        self.cost = cost_ms / 1000
        self.queue_limit = queue_limit
        self._pool = asyncio.Semaphore(workers) if workers else None
        # Event-loop state, read by metrics.
        self.waiting = 0
        self.busy = 0
        self.refused = 0
        self.expired = 0  # dropped at a worker because their deadline had passed
        # Requests in the pool (busy + waiting) integrated over time, for take_occupancy().
        self._clock = clock
        self._since = self._changed = clock()
        self._integral = 0.0

    @property
    def utilization(self) -> float:
        return self.busy / self.workers if self.workers else 0.0

    def take_occupancy(self) -> float:
        """Mean requests in the pool (held or waiting) per worker since the previous call.

        Offered load against the pool: about the utilization below saturation, above 1 once
        a line forms. 0.0 for an unlimited pool. The control loop reads it as the cell's
        load, so a cell whose workers are saturated never reads as lightly loaded.
        """
        if not self.workers:
            return 0.0
        self._account()
        now = self._clock()
        mean = self._integral / max(1e-9, now - self._since)
        self._since, self._integral = now, 0.0
        return mean / self.workers

    def _account(self) -> None:
        """Add the time since the last change at the pool's current size to the integral."""
        now = self._clock()
        self._integral += (self.busy + self.waiting) * (now - self._changed)
        self._changed = now

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold one worker for the duration of the block; CellOverloaded when the line is full.

        With a `deadline` (on the pool's clock), a request that gets its worker only after
        it raises CallerGaveUp and frees the worker at once: a server that checks its
        callers' deadlines at dequeue does no work for callers who have gone.
        """
        if self._pool is None:
            yield
            return
        if self.waiting >= self.queue_limit:
            self.refused += 1
            raise CellOverloaded(f"{self.busy} workers busy, {self.waiting} waiting")
        self._account()
        self.waiting += 1
        try:
            await self._pool.acquire()
        finally:
            self._account()
            self.waiting -= 1
        if deadline is not None and self._clock() > deadline:
            self._pool.release()
            self.expired += 1
            late = self._clock() - deadline
            raise CallerGaveUp(f"a worker was free {late:.3f} s after the caller's deadline")
        self.busy += 1
        try:
            if self.cost:
                await asyncio.sleep(self.cost)
            yield
        finally:
            self._account()
            self.busy -= 1
            self._pool.release()
