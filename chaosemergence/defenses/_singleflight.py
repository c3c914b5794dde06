"""Coalesce concurrent calls for the same key into one shared computation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ._recorder import NULL_RECORDER, MetricsRecorder
from ._types import T

__all__ = ["SingleFlight"]


@dataclass(eq=False, slots=True)
class _Flight[R]:
    """One in-flight computation and the callers waiting on it."""

    future: asyncio.Future[R]
    task: asyncio.Task[None] | None = None
    waiters: int = 0  # guarded by the event loop: changed only between awaits
    joined: int = field(default=0)  # callers that shared this flight, including the first


class SingleFlight:
    """At most one computation per key in flight; every concurrent caller gets its outcome.

    The computation runs in its own task, so a caller that times out or is cancelled
    never cancels it for the others. An error raised by the computation reaches every
    caller waiting on it. With ``enabled=False`` every caller computes for itself.
    """

    def __init__(
        self,
        name: str = "singleflight",
        *,
        enabled: bool = True,
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        self.name = name
        self._recorder = recorder
        self.enabled = enabled
        # Guarded by the event loop: read and written only in synchronous code.
        self._flights: dict[Hashable, _Flight[Any]] = {}
        # Guarded by the event loop: strong references keep forgotten computations alive.
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0  # every do() call
        self.computations = 0  # computations actually started
        self.timeouts = 0  # waiters that gave up

    async def do(
        self, key: Hashable, fn: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        """Return ``await fn()``, sharing one computation among concurrent callers of ``key``.

        ``timeout`` bounds only this caller's wait; it raises ``TimeoutError`` and leaves
        the shared computation running.
        """
        self.calls += 1
        if not self.enabled:
            self.computations += 1
            if timeout is None:
                return await fn()
            async with asyncio.timeout(timeout):
                return await fn()
        flight: _Flight[T] | None = self._flights.get(key)
        if flight is None:
            loop = asyncio.get_running_loop()
            flight = _Flight(loop.create_future())
            self._flights[key] = flight
            self.computations += 1
            self._recorder.increment("singleflight_computations", flight=self.name)
            flight.task = loop.create_task(self._run(key, flight, fn))
            self._tasks.add(flight.task)
            flight.task.add_done_callback(self._tasks.discard)
        else:
            self._recorder.increment("singleflight_shared", flight=self.name)
        flight.waiters += 1
        flight.joined += 1
        try:
            if timeout is None:
                return await asyncio.shield(flight.future)
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(flight.future)
            except TimeoutError:
                self.timeouts += 1
                self._recorder.increment("singleflight_timeouts", flight=self.name)
                raise
        finally:
            flight.waiters -= 1

    async def _run(self, key: Hashable, flight: _Flight[T], fn: Callable[[], Awaitable[T]]) -> None:
        try:
            result = await fn()
        except BaseException as exc:  # every outcome, cancellation included, reaches waiters
            if not flight.future.done():
                if isinstance(exc, asyncio.CancelledError):
                    flight.future.cancel()
                else:
                    flight.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not flight.future.done():
                flight.future.set_result(result)
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            # Nobody may be left to retrieve an error; mark it retrieved to avoid log noise.
            if flight.future.done() and not flight.future.cancelled():
                flight.future.exception()

    def waiters(self, key: Hashable) -> int:
        """Return how many callers are waiting on ``key``'s computation (0 if none)."""
        flight = self._flights.get(key)
        return flight.waiters if flight is not None else 0

    def in_flight(self) -> int:
        """Return how many keys have a computation in flight."""
        return len(self._flights)

    def total_waiters(self) -> int:
        """Return how many callers are waiting across all keys."""
        return sum(f.waiters for f in self._flights.values())

    def forget(self, key: Hashable) -> None:
        """Let the next caller of ``key`` start a fresh computation.

        Callers already waiting still get the running computation's outcome.
        """
        self._flights.pop(key, None)

    def reset(self) -> None:
        """Forget every key and zero the counters (running computations finish unobserved)."""
        self._flights.clear()
        self.calls = self.computations = self.timeouts = 0

    def snapshot(self) -> dict[str, object]:
        """Return coalescing counters as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "in_flight": len(self._flights),
            "waiters": self.total_waiters(),
            "calls": self.calls,
            "computations": self.computations,
            "coalesced": self.calls - self.computations,
            "timeouts": self.timeouts,
        }
