"""A cell's own finite capacity: a pool of workers, each user request holding one.

Like a server's worker threads: a request waits for a free worker, holds it while it is
handled (plus a fixed CPU cost), and a full waiting line refuses at once. This is what
makes a cell overload when failover pushes other cells' users onto it (cascade).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["CellCapacity", "CellOverloaded"]


class CellOverloaded(Exception):
    """Every worker is busy and the waiting line is full."""


class CellCapacity:
    """`workers` concurrent requests (0 = unlimited), each costing `cost_ms` of work."""

    def __init__(self, workers: int, cost_ms: float, queue_limit: int) -> None:
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

    @property
    def utilization(self) -> float:
        return self.busy / self.workers if self.workers else 0.0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one worker for the duration of the block; CellOverloaded when the line is full."""
        if self._pool is None:
            yield
            return
        if self.waiting >= self.queue_limit:
            self.refused += 1
            raise CellOverloaded(f"{self.busy} workers busy, {self.waiting} waiting")
        self.waiting += 1
        try:
            await self._pool.acquire()
        finally:
            self.waiting -= 1
        self.busy += 1
        try:
            if self.cost:
                await asyncio.sleep(self.cost)
            yield
        finally:
            self.busy -= 1
            self._pool.release()
