"""Synchronization: the dependency every cell shares, and how in step the cells call it.

The gateway hosts one ``SimulatedDependency`` ("shared_config") with its own capacity
(workers, queue, service time). Every cell's configuration pollers (and their retries) call
it through ``POST /internal/shared/{cell}``; users read it through ``GET
/users/{id}/config`` with a shorter deadline of their own (``shared_read_timeout_ms``), so
they wait in the same queue as the pollers' bursts. The gateway counts each cell's poller
arrivals per time bucket (``LoadSeries``) and measures the largest pairwise correlation of
those series: self-generated load, the load jitter can move (users' reads are left out).
Once a second the gateway pushes the correlation to the cells, whose control loops raise
jitter when it crosses the danger threshold.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from chaosemergence.app.dependency import (
    DependencyError,
    DependencyOverloaded,
    DependencyTimeout,
    SimulatedDependency,
)
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.settings import SystemSettings
from chaosemergence.contract import MAX_CORRELATION_WINDOW_SECONDS
from chaosemergence.defenses.detect import LoadSeries, correlation_level, max_pairwise_correlation

__all__ = ["SHARED_DEPENDENCY", "SharedDependencyHost", "peak_to_mean"]

SHARED_DEPENDENCY = "shared_config"
# A cell with fewer arrivals than this in the window is left out of the correlation: two
# nearly empty series that share one bucket would read as perfectly correlated.
MIN_ARRIVALS = 5
# The loop also reads a window half as long: a correlation this strong there is no noise
# (simulated jittered cells never reached 0.75 in it) and is acted on at once.
STRONG_CORRELATION = 0.85
RESULTS = ("success", "timeout", "overloaded", "error")


def peak_to_mean(counts: list[float]) -> float:
    """The largest count over the mean count (0 when there is nothing)."""
    if not counts:
        return 0.0
    mean = sum(counts) / len(counts)
    return max(counts) / mean if mean > 0 else 0.0


def _fold(counts: list[float], period: int) -> list[float]:
    """Sum ``counts`` by position within ``period`` buckets (the load profile of one period)."""
    profile = [0.0] * period
    for i, value in enumerate(counts):
        profile[i % period] += value
    return profile


class SharedDependencyHost:
    """The shared dependency, its faults, and each cell's arrivals over time.

    The gateway's data plane serves calls; its admin API (another thread) reads the series
    and resets them: the series are guarded by ``_lock``, the faults by their own lock.

    Series are bucketed on the wall clock so that every cell's buckets line up. Two series
    per cell: a short one for the once-a-second loop, a long one for on-demand readings.
    """

    def __init__(
        self,
        settings: SystemSettings,
        *,
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cells = settings.cells
        self.bucket_seconds = settings.correlation_bucket_seconds
        self.loop_window = settings.correlation_window_seconds
        self.period_seconds = settings.shared_poll_interval_seconds
        self.faults = FaultTable(clock=clock)
        self.dependency = SimulatedDependency(
            SHARED_DEPENDENCY, settings.shared_dependency, self.faults, rng=rng, clock=clock
        )
        self._wall = wall_clock

        def series(window: float) -> LoadSeries:
            return LoadSeries(self.bucket_seconds, window, clock=wall_clock)

        # Guards _short and _long (never held across an await).
        self._lock = threading.Lock()
        self._short = {i: series(self.loop_window) for i in range(self.cells)}
        self._long = {i: series(MAX_CORRELATION_WINDOW_SECONDS) for i in range(self.cells)}
        self.calls: dict[tuple[int, str], int] = {
            (i, r): 0 for i in range(self.cells) for r in RESULTS
        }
        self.read_timeout = settings.shared_read_timeout_ms / 1000
        self.reads: dict[str, int] = dict.fromkeys(RESULTS, 0)
        self.last: dict[str, Any] | None = None

    async def call(self, cell: int) -> tuple[int, dict[str, Any]]:
        """Serve one call from ``cell``: (HTTP status, body)."""
        with self._lock:
            self._short[cell].record()
            self._long[cell].record()
        started = self._wall()
        try:
            await self.dependency.call()
        except DependencyTimeout as error:
            return self._count(cell, "timeout", 504, str(error))
        except DependencyOverloaded as error:
            return self._count(cell, "overloaded", 503, str(error))
        except DependencyError as error:
            return self._count(cell, "error", 502, str(error))
        status, body = self._count(cell, "success", 200, "")
        return status, {**body, "latency_ms": (self._wall() - started) * 1000}

    async def read(self) -> tuple[int, dict[str, Any]]:
        """Serve one user's read of the configuration: (HTTP status, body).

        Same queue as the pollers, a user's deadline; not part of the cells' load series.
        """
        started = self._wall()
        try:
            await self.dependency.call(self.read_timeout)
        except DependencyTimeout as error:
            return self._count_read("timeout", 504, str(error))
        except DependencyOverloaded as error:
            return self._count_read("overloaded", 503, str(error))
        except DependencyError as error:
            return self._count_read("error", 502, str(error))
        status, body = self._count_read("success", 200, "")
        return status, {**body, "latency_ms": (self._wall() - started) * 1000}

    def _count_read(self, result: str, status: int, error: str) -> tuple[int, dict[str, Any]]:
        self.reads[result] += 1
        body: dict[str, Any] = {"dependency": SHARED_DEPENDENCY, "result": result}
        if error:
            body["error"] = error
        return status, body

    def _count(self, cell: int, result: str, status: int, error: str) -> tuple[int, dict[str, Any]]:
        self.calls[(cell, result)] += 1
        body: dict[str, Any] = {"dependency": SHARED_DEPENDENCY, "result": result}
        if error:
            body["error"] = error
        return status, body

    # ---------------------------------------------------------------- readings
    def snapshot_series(self, window: float) -> tuple[int, dict[int, list[float]]]:
        """(buckets, each cell's last ``buckets`` complete buckets) over ``window`` seconds."""
        short = window <= self.loop_window
        source = self._short if short else self._long
        buckets = max(2, round(window / self.bucket_seconds))
        out = {}
        with self._lock:
            for cell, series in source.items():
                _end, values = series.series()
                out[cell] = values[-buckets:]
        return min(buckets, min(len(v) for v in out.values())), out

    def reading(self, buckets: int, series: dict[int, list[float]]) -> dict[str, Any]:
        """Correlation, the pair it came from, its level, and how peaked the shared load is.

        Pure computation over a snapshot: safe to run in a worker thread.
        """
        trimmed = {str(cell): values[-buckets:] for cell, values in series.items()}
        found = max_pairwise_correlation(
            {cell: values for cell, values in trimmed.items() if sum(values) >= MIN_ARRIVALS}
        )
        total = [sum(values[i] for values in trimmed.values()) for i in range(buckets)]
        period = max(1, round(self.period_seconds / self.bucket_seconds))
        return {
            "correlation": found.value,
            "pair": [int(c) for c in found.pair] if found.pair else None,
            "level": correlation_level(found.value).value,
            "peak_to_mean": peak_to_mean(total),
            "phase_peak_to_mean": peak_to_mean(_fold(total, period)) if period > 1 else 1.0,
            "buckets": buckets,
            "bucket_seconds": self.bucket_seconds,
            "window": buckets * self.bucket_seconds,
            "arrivals": sum(total),
        }

    def loop_reading(self) -> dict[str, Any]:
        """The reading the once-a-second loop pushes to the cells.

        The correlation over the control window, or over half of it when that is already
        strong: full alignment shows there twice as fast, noise does not.
        """
        reading = self.reading(*self.snapshot_series(self.loop_window))
        fast = self.reading(*self.snapshot_series(self.loop_window / 2))
        reading["window_correlation"] = reading["correlation"]
        reading["fast_correlation"] = fast["correlation"]
        if fast["correlation"] >= STRONG_CORRELATION > reading["correlation"]:
            reading["correlation"] = fast["correlation"]
            reading["pair"] = fast["pair"]
            reading["level"] = fast["level"]
        self.last = reading
        return reading

    def reset(self) -> None:
        self.faults.clear()
        with self._lock:
            for series in (*self._short.values(), *self._long.values()):
                series.reset()
        self.last = None

    def state(self) -> dict[str, Any]:
        dep = self.dependency
        return {
            "name": SHARED_DEPENDENCY,
            "in_flight": dep.in_flight,
            "waiting": dep.waiting,
            **vars(dep.stats),
            "user_reads": dict(self.reads),
            "faults": self.faults.snapshot(),
            "correlation": self.last,
        }
