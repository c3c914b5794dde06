"""Death spiral: real memory ballast under the cell's limit, a GC model, and the guardrails.

``POST /admin/memory-pressure`` makes the cell leak: it allocates real, resident ballast
at a given rate. The cell's memory is accounted as ballast plus a working set per request
in flight, against its configured limit (``cell_memory_limit_mb``); the accounting, not
the process RSS, is what the limit applies to, so the dynamics do not depend on the
interpreter's baseline footprint. Memory slows the cell like a stop-the-world garbage
collector would: every admitted request allocates, which costs one collector pause that
grows with the share of the limit in use (its 4th power: little at half the limit, most of
the time near it); pauses are serialized (one collector), and while one runs the whole
process stands still, so every request in flight is delayed by every pause that runs
while it is in flight (``run_request``). Throughput falls, requests last longer, more of
them are in flight holding their working set, memory grows, pauses grow: the loop closes.
At the limit the cell dies the way the OOM killer kills (SIGKILL, through ``on_oom``).

Defenses: ``MemoryGuardrail`` sheds non-critical work above ``memory_shed_at`` of the
limit, ``GcPressureBreaker`` refuses non-critical work while pauses take more than 25% of
wall time, ``PredictiveRestart`` asks (``on_restart``) for a graceful restart before the
line fitted to memory reaches 95% of the limit.

Memory pressure is a fault of the cell, not of its process: ``Pressure`` carries its
deadline on the wall clock so that the supervisor can give a restarted process what is
left of it (``--memory-pressure``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chaosemergence.app.settings import SystemSettings
from chaosemergence.defenses import EventLog
from chaosemergence.defenses.control import GcPressureBreaker, MemoryGuardrail, PredictiveRestart

__all__ = ["MB", "MemoryModel", "Pressure"]

T = TypeVar("T")

MB = 1024 * 1024
SAMPLE_SECONDS = 0.1
# Pauses shorter than this are not modelled (no queueing on the collector for nothing).
PAUSE_FLOOR_SECONDS = 0.0005
# The GC breaker refuses non-critical work while pauses take a quarter of wall time.
GC_BREAKER_THRESHOLD = 0.25
# Pauses grow with the 4th power of usage: negligible at half the limit, dominant near it.
PAUSE_EXPONENT = 4
GC_BREAKER_WINDOW_SECONDS = 5.0
RESTART_TARGET = 0.95
RESTART_FIT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Pressure:
    """One memory-pressure injection: a leak rate until a deadline."""

    bytes_per_second: float
    started_at: float
    until: float


class MemoryModel:
    """One cell's memory: ballast, working set, GC pauses and the three guardrails.

    ``tick()`` (every ``SAMPLE_SECONDS`` from ``run()``) allocates the ballast due since the
    last tick, kills the cell at its limit, and feeds the guardrail and the predictive
    restart. Only the event loop touches it.
    """

    def __init__(
        self,
        settings: SystemSettings,
        *,
        on_oom: Callable[[str], None],
        on_restart: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        events: EventLog | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.limit_bytes = settings.cell_memory_limit_mb * MB
        self.working_set_bytes = settings.request_working_set_kb * 1024
        self.max_pause = settings.gc_pause_max_ms / 1000
        self._clock = clock
        self._sleep = sleep
        self._on_oom = on_oom
        self.guardrail = MemoryGuardrail(
            self.limit_bytes,
            self.used_bytes,
            shed_at=settings.memory_shed_at,
            refuse_at=settings.memory_refuse_at,
            min_interval=0.05,
            clock=clock,
            events=events,
        )
        self.gc_breaker = GcPressureBreaker(
            GC_BREAKER_THRESHOLD, GC_BREAKER_WINDOW_SECONDS, clock=clock, events=events
        )
        self.predictive = PredictiveRestart(
            self.limit_bytes,
            horizon_seconds=settings.restart_horizon_seconds,
            # A short fit window follows a leak that just started (a long one lags behind it).
            window_seconds=RESTART_FIT_SECONDS,
            min_samples=10,
            target=RESTART_TARGET,
            on_restart=on_restart,
            clock=clock,
            events=events,
        )
        # All fields below are only touched from the event loop.
        self._ballast: list[bytes] = []
        self.ballast_bytes = 0
        self.in_flight = 0
        self.pressure: Pressure | None = None
        self.last_pressure: Pressure | None = None
        self._allocated_until = 0.0
        self._gate = asyncio.Lock()  # the collector: one stop-the-world pause at a time
        self.gc_seconds = 0.0  # pauses completed
        self._pause_started: float | None = None  # the pause running now, if any
        self.pauses = 0
        self.oom = False

    # ------------------------------------------------------------------ accounting
    def used_bytes(self) -> float:
        """Accounted memory: ballast plus the working set of every request in flight."""
        return self.ballast_bytes + self.in_flight * self.working_set_bytes

    @property
    def usage(self) -> float:
        """Share of the limit in use."""
        return self.used_bytes() / self.limit_bytes

    def enter(self) -> None:
        """A request starts: it holds its working set until ``leave``."""
        self.in_flight += 1

    def leave(self) -> None:
        self.in_flight -= 1

    # ------------------------------------------------------------------ pressure
    def start_pressure(self, megabytes_per_second: float, duration: float) -> dict[str, Any]:
        """Leak ``megabytes_per_second`` for ``duration`` seconds (replacing any running leak)."""
        now = self._clock()
        self.tick()  # settle what the previous leak owed
        pressure = Pressure(megabytes_per_second * MB, now, now + duration)
        self.pressure = self.last_pressure = pressure
        self._allocated_until = now
        room = self.limit_bytes - self.used_bytes()
        return {
            "megabytes_per_second": megabytes_per_second,
            "duration": duration,
            "limit_bytes": self.limit_bytes,
            "used_bytes": self.used_bytes(),
            "seconds_to_limit": room / pressure.bytes_per_second,
        }

    def clear(self) -> int:
        """Stop any leak and drop the ballast; returns the bytes released."""
        released = self.ballast_bytes
        self.pressure = None
        self._ballast.clear()
        self.ballast_bytes = 0
        self.guardrail.reset()
        self.gc_breaker.reset()
        self.predictive.reset()
        return released

    def _allocate(self, amount: float) -> None:
        room = self.limit_bytes - self.used_bytes()
        take = int(min(amount, room))
        if take > 0:
            # Filled, not calloc'ed: the pages are really resident.
            self._ballast.append(b"\x5a" * take)
            self.ballast_bytes += take
        if amount > room:
            self._kill(f"memory limit of {self.limit_bytes / MB:.0f} MB reached")

    def _kill(self, reason: str) -> None:
        if not self.oom:
            self.oom = True
            self._on_oom(reason)

    def tick(self) -> None:
        """Allocate the ballast due by now, enforce the limit, feed guardrail and restart."""
        now = self._clock()
        pressure = self.pressure
        if pressure is not None:
            end = min(now, pressure.until)
            if end > self._allocated_until:
                self._allocate((end - self._allocated_until) * pressure.bytes_per_second)
                self._allocated_until = end
            if now >= pressure.until:
                self.pressure = None
        used = self.used_bytes()
        if used >= self.limit_bytes:
            self._kill(f"memory limit of {self.limit_bytes / MB:.0f} MB reached")
        if self.guardrail.enabled:
            self.guardrail.check()
        self.predictive.observe(used)

    async def run(self) -> None:
        while True:
            self.tick()
            await self._sleep(SAMPLE_SECONDS)

    # ------------------------------------------------------------------ GC model
    def pause_seconds(self) -> float:
        """The stop-the-world pause one request pays now (``gc_pause_max_ms`` at the limit)."""
        return float(self.max_pause * min(1.0, self.usage) ** PAUSE_EXPONENT)

    async def gc_pause(self) -> None:
        """Wait for the collector: pauses are serialized, so they cap the cell's throughput."""
        pause = self.pause_seconds()
        if pause < PAUSE_FLOOR_SECONDS:
            return
        async with self._gate:
            self._pause_started = self._clock()
            try:
                await self._sleep(pause)
            finally:
                self._pause_started = None
                self.gc_breaker.record_pause(pause)
                self.gc_seconds += pause
                self.pauses += 1

    def gc_clock(self) -> float:
        """Seconds the world has stood still so far (completed pauses and the running one)."""
        running = self._pause_started
        return self.gc_seconds + (0.0 if running is None else self._clock() - running)

    async def run_request(self, work: Callable[[], Awaitable[T]]) -> T:
        """One request under the collector: its own pause, its work, the pauses it sat through.

        Stop-the-world: while a pause runs nothing in the process progresses, so a request is
        done only once it has also waited out every pause that ran while it was working
        (pauses keep running meanwhile: with pauses back to back it is never done).
        """
        await self.gc_pause()
        since = self.gc_clock()
        result = await work()
        stalled = 0.0
        while (owed := self.gc_clock() - since - stalled) >= PAUSE_FLOOR_SECONDS:
            await self._sleep(owed)
            stalled += owed
        return result

    def admit(self, critical: bool) -> str | None:
        """None to admit a request, else the name of the defense that refuses it."""
        if not self.guardrail.admit(critical):
            return self.guardrail.name
        if not self.gc_breaker.allow(critical):
            return self.gc_breaker.name
        return None

    # ------------------------------------------------------------------ reporting
    def snapshot(self) -> dict[str, Any]:
        pressure = self.pressure
        return {
            "used_bytes": self.used_bytes(),
            "limit_bytes": self.limit_bytes,
            "usage": self.usage,
            "ballast_bytes": self.ballast_bytes,
            "requests_in_flight": self.in_flight,
            "working_set_bytes_per_request": self.working_set_bytes,
            "rss_bytes": _rss_bytes(),
            "pressure": None
            if pressure is None
            else {
                "megabytes_per_second": pressure.bytes_per_second / MB,
                "remaining_seconds": max(0.0, pressure.until - self._clock()),
            },
            "gc_pause_ms": self.pause_seconds() * 1000,
            "gc_seconds_total": self.gc_seconds,
        }


def _rss_bytes() -> int | None:
    """The process's resident set size (for information; the limit applies to the accounting)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
