"""A simulated downstream server: finite workers, a bounded queue, a service-time distribution.

It behaves like a real server so that failure patterns emerge instead of being scripted:
latency grows with load (queueing), and a call whose caller has already timed out keeps its
worker busy until done ("wasted work"), which is what closes the retry-storm and metastable
loops; with `serve_abandoned` false, a worker drops such a call when it reaches it (a deadline
check at dequeue) instead. Faults are drawn per call from the cell's FaultTable.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaosemergence.app.faults import FaultTable
from chaosemergence.app.settings import DependencySettings

__all__ = [
    "DependencyError",
    "DependencyOverloaded",
    "DependencyStats",
    "DependencyTimeout",
    "SimulatedDependency",
]


class DependencyError(Exception):
    """The dependency answered with an error."""


class DependencyTimeout(DependencyError):
    """The caller's deadline passed before the dependency answered."""


class DependencyOverloaded(DependencyError):
    """The dependency's queue is full: the call was refused at once."""


@dataclass
class DependencyStats:
    """Counters since start, read by the metrics collector."""

    calls: int = 0
    succeeded: int = 0
    timeouts: int = 0
    errors: int = 0
    overloaded: int = 0
    wasted: int = 0  # completed after the caller had given up
    served: int = 0  # calls a worker actually served
    # Queued calls dropped because their caller had gone: by drain(), or at dequeue when the
    # server does not serve abandoned calls (serve_abandoned false).
    drained: int = 0


class SimulatedDependency:
    """One capacity-limited dependency of one cell."""

    def __init__(
        self,
        name: str,
        settings: DependencySettings,
        faults: FaultTable,
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._faults = faults
        self._rng = rng
        self._clock = clock
        self._workers = asyncio.Semaphore(settings.concurrency)
        # Guarded by the event loop (single-threaded): counts of calls queued / being served.
        self.waiting = 0
        self.in_flight = 0
        self.stats = DependencyStats()
        self._pending: set[asyncio.Task[None]] = set()
        # Calls waiting for a worker, with the future their caller waits on (event loop only).
        self._queued: dict[asyncio.Task[None], asyncio.Future[None]] = {}

    @property
    def utilization(self) -> float:
        return self.in_flight / self.settings.concurrency

    @property
    def capacity_per_second(self) -> float:
        """Calls its workers can serve per second: concurrency / mean service time."""
        return self.settings.concurrency * 1000.0 / self.settings.service_time_ms

    async def call(self, timeout: float | None = None) -> float:
        """Make one call; returns the seconds it took. Raises a DependencyError subclass."""
        deadline = self.settings.call_timeout_ms / 1000 if timeout is None else timeout
        self.stats.calls += 1
        started = self._clock()
        faults = self._faults.draw(self.name, self._rng)
        if any(f.kind == "error" for f in faults):
            self.stats.errors += 1
            raise DependencyError(f"{self.name}: injected error")
        if self.waiting >= self.settings.queue_limit:
            self.stats.overloaded += 1
            raise DependencyOverloaded(f"{self.name}: queue full ({self.waiting})")
        extra = sum(f.latency_ms for f in faults if f.kind == "latency") / 1000
        lost = any(f.kind == "timeout" for f in faults)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._serve(extra, lost, done))
        self._queued[task] = done
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        try:
            await asyncio.wait_for(asyncio.shield(done), deadline)
        except TimeoutError:
            done.cancel()  # tells the server its caller is gone
            self.stats.timeouts += 1
            raise DependencyTimeout(
                f"{self.name}: no answer within {deadline * 1000:.0f} ms"
            ) from None
        except asyncio.CancelledError:
            done.cancel()
            raise
        self.stats.succeeded += 1
        return self._clock() - started

    def _service_time(self) -> float:
        """One draw of the service time, in seconds (gamma with the configured spread)."""
        mean = self.settings.service_time_ms / 1000
        shape = 1 / self.settings.service_time_cv**2
        return self._rng.gammavariate(shape, mean / shape)

    async def _serve(self, extra_latency: float, lost: bool, done: asyncio.Future[None]) -> None:
        # The server keeps working even when the caller has left: that work is wasted.
        self.waiting += 1
        admitted = False
        current = asyncio.current_task()
        try:
            async with self._workers:
                self._forget_queued(current)
                self.waiting -= 1
                admitted = True
                if done.cancelled() and not self.settings.serve_abandoned:
                    self.stats.drained += 1  # its caller is gone: not worth a worker
                    return
                self.in_flight += 1
                try:
                    service = self._service_time()
                    if lost:  # a hung request holds its worker until the server gives up
                        service = max(service, self.settings.hang_ms / 1000)
                    await asyncio.sleep(service + extra_latency)
                    self.stats.served += 1
                finally:
                    self.in_flight -= 1
        finally:
            if not admitted:
                self._forget_queued(current)
                self.waiting -= 1
        if done.cancelled():
            self.stats.wasted += 1
        elif not lost:  # a lost response never reaches the caller, who times out
            done.set_result(None)

    def _forget_queued(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None:
            self._queued.pop(task, None)

    def drain(self) -> int:
        """Drop the queued calls whose caller has already gone; returns how many.

        They would otherwise take a worker later and do wasted work (what keeps a
        metastable queue stuck); calls being served, or still awaited, are left alone.
        """
        gone = [task for task, done in self._queued.items() if done.cancelled()]
        for task in gone:
            task.cancel()
            del self._queued[task]
        self.stats.drained += len(gone)
        return len(gone)

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
