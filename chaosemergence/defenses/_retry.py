"""Retry an async operation with backoff, jitter and a retry budget."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from ._errors import DefenseError
from ._events import EventLog
from ._recorder import NULL_RECORDER, MetricsRecorder
from ._types import Clock, Sleep, T
from ._window import SlidingCounts

__all__ = [
    "Backoff",
    "DecorrelatedJitterBackoff",
    "ExponentialBackoff",
    "FullJitterBackoff",
    "RetryBudget",
    "RetryPolicy",
]

BUDGET_DEFENSE = "retry_budget"


class Backoff(Protocol):
    """How long to wait after failed attempt number ``attempt`` (1 = the first call)."""

    def delay(self, attempt: int) -> float: ...


def _check(base: float, cap: float, multiplier: float = 2.0) -> None:
    if base < 0 or cap < base or multiplier < 1:
        msg = f"need 0 <= base <= cap and multiplier >= 1, got {base=}, {cap=}, {multiplier=}"
        raise ValueError(msg)


class ExponentialBackoff:
    """Wait ``base * multiplier**(attempt-1)`` seconds, capped at ``cap``, without jitter."""

    def __init__(self, base: float = 0.1, cap: float = 10.0, multiplier: float = 2.0) -> None:
        _check(base, cap, multiplier)
        self.base, self.cap, self.multiplier = base, cap, multiplier

    def delay(self, attempt: int) -> float:
        """Return the capped exponential delay after failed attempt ``attempt``."""
        exponent = max(0, attempt - 1)
        if exponent > 1000:
            return self.cap
        return float(min(self.cap, self.base * self.multiplier**exponent))


class FullJitterBackoff:
    """Wait a uniform random time in [0, min(cap, base * 2**(attempt-1))] ("full jitter")."""

    def __init__(
        self, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        _check(base, cap)
        self.base, self.cap = base, cap
        self._ceiling = ExponentialBackoff(base, cap)
        self.rng = rng if rng is not None else random.Random()

    def delay(self, attempt: int) -> float:
        """Return a fully jittered delay after failed attempt ``attempt``."""
        return self.rng.uniform(0.0, self._ceiling.delay(attempt))


class DecorrelatedJitterBackoff:
    """Wait min(cap, uniform(base, 3 * previous delay)); attempt 1 restarts from ``base``.

    Stateful per retry sequence, like AWS's "decorrelated jitter"; one instance per policy
    run keeps sequences independent (``RetryPolicy`` calls ``delay`` in attempt order).
    """

    def __init__(
        self, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None
    ) -> None:
        _check(base, cap)
        self.base, self.cap = base, cap
        self.rng = rng if rng is not None else random.Random()
        # Guarded by the caller: one retry sequence at a time per instance.
        self._previous = base

    def delay(self, attempt: int) -> float:
        """Return the next decorrelated-jitter delay after failed attempt ``attempt``."""
        if attempt <= 1:
            self._previous = self.base
        upper = max(self.base, self._previous * 3.0)
        self._previous = min(self.cap, self.rng.uniform(self.base, upper))
        return self._previous


class RetryBudget:
    """Allow retries only while they stay within ``ratio`` of recent requests.

    A token bucket whose deposits expire: each first attempt deposits ``ratio`` of a
    token, a floor of ``min_retries_per_second`` tokens per second is always available,
    and both are counted over the last ``window_seconds`` (Finagle's RetryBudget).

    Events mark refusal episodes, not decisions: an episode starts at the first refusal
    and ends at a granted retry only after ``quiet_seconds`` without a refusal. At the
    budget's edge every new request earns a fraction of a retry, so grants and refusals
    alternate per request; one event pair per decision (thousands a second) would push
    every other defense's history out of the event log.
    """

    def __init__(
        self,
        ratio: float = 0.1,
        min_retries_per_second: float = 1.0,
        *,
        window_seconds: float = 10.0,
        quiet_seconds: float = 1.0,
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        name: str = BUDGET_DEFENSE,
        enabled: bool = True,
    ) -> None:
        if (
            not 0.0 <= ratio <= 1.0
            or min_retries_per_second < 0
            or window_seconds <= 0
            or quiet_seconds < 0
        ):
            msg = (
                "need 0 <= ratio <= 1, min_retries_per_second >= 0, window_seconds > 0, "
                f"quiet_seconds >= 0, got {ratio=}, {min_retries_per_second=}, "
                f"{window_seconds=}, {quiet_seconds=}"
            )
            raise ValueError(msg)
        self.name = name
        self.ratio = ratio
        self.min_retries_per_second = min_retries_per_second
        self.window_seconds = window_seconds
        self.quiet_seconds = quiet_seconds
        self.enabled = enabled
        self._clock = clock
        self._events = events
        # Guarded by the event loop (sync code only): requests in field 0, retries in 1.
        self._counts = SlidingCounts(window_seconds, 2, 10)
        # Guarded by the event loop: True during a refusal episode, and when it last refused.
        self._refusing = False
        self._last_refusal = 0.0
        self.allowed = 0
        self.refused = 0

    def record_request(self) -> None:
        """Count one first attempt (not a retry); it earns ``ratio`` of a retry."""
        self._counts.add(self._clock(), 0)

    def available(self) -> float:
        """Return how many retries the budget would allow right now."""
        requests, retries = self._counts.totals(self._clock())
        limit = self.ratio * requests + self.min_retries_per_second * self.window_seconds
        return max(0.0, limit - retries)

    def can_retry(self) -> bool:
        """Consume a retry token and return True, or return False when the budget is spent."""
        if not self.enabled:
            self.allowed += 1
            return True
        now = self._clock()
        requests, retries = self._counts.totals(now)
        limit = self.ratio * requests + self.min_retries_per_second * self.window_seconds
        if retries + 1 <= limit:
            self._counts.add(now, 1)
            self.allowed += 1
            if self._refusing and now - self._last_refusal >= self.quiet_seconds:
                self._refusing = False
                if self._events is not None:
                    self._events.record(
                        self.name,
                        "deactivated",
                        "retry budget allows retries again",
                        requests=requests,
                        retries=retries,
                    )
            return True
        self.refused += 1
        self._last_refusal = now
        if not self._refusing:
            self._refusing = True
            if self._events is not None:
                self._events.record(
                    self.name,
                    "activated",
                    f"retries {retries} reached {self.ratio:.0%} of {requests} requests",
                    requests=requests,
                    retries=retries,
                )
        return False

    @property
    def refusing(self) -> bool:
        """Whether a refusal episode is under way (see the class docstring)."""
        return self._refusing

    def reset(self) -> None:
        """Forget every request and retry."""
        self._counts.clear()
        self.allowed = self.refused = 0
        if self._refusing:
            self._refusing = False
            if self._events is not None:
                self._events.record(self.name, "deactivated", "reset")

    def snapshot(self) -> dict[str, object]:
        """Return the budget's window and decisions as JSON-able data."""
        requests, retries = self._counts.totals(self._clock())
        return {
            "name": self.name,
            "enabled": self.enabled,
            "ratio": self.ratio,
            "min_retries_per_second": self.min_retries_per_second,
            "window_requests": requests,
            "window_retries": retries,
            "available": self.available(),
            "refusing": self._refusing,
            "allowed": self.allowed,
            "refused": self.refused,
        }


class RetryPolicy:
    """Retry an operation up to ``max_attempts`` times with backoff and a retry budget.

    With ``enabled=False`` it behaves like a naive client: it still retries up to
    ``max_attempts`` times, but immediately (``naive_delay``) and ignoring the budget.
    ``CircuitOpenError`` and other ``DefenseError``s are never retried.
    """

    def __init__(
        self,
        max_attempts: int = 3,
        backoff: Backoff | None = None,
        budget: RetryBudget | None = None,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        sleep: Sleep = asyncio.sleep,
        on_attempt: Callable[[int], None] | None = None,
        *,
        name: str = "retry",
        enabled: bool = True,
        naive_delay: float = 0.0,
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        if max_attempts < 1:
            msg = f"max_attempts must be >= 1, got {max_attempts!r}"
            raise ValueError(msg)
        self.name = name
        self.max_attempts = max_attempts
        self.backoff: Backoff = backoff if backoff is not None else FullJitterBackoff()
        self.budget = budget
        self.retry_on = retry_on
        self.enabled = enabled
        self.naive_delay = naive_delay
        self._sleep = sleep
        self._on_attempt = on_attempt
        self._recorder = recorder
        self.attempts = 0
        self.retries = 0
        self.budget_refusals = 0

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await ``operation()`` until it succeeds, retrying retryable errors."""
        attempt = 1
        while True:
            self.attempts += 1
            if self._on_attempt is not None:
                self._on_attempt(attempt)
            if attempt == 1 and self.budget is not None and self.enabled:
                self.budget.record_request()
            try:
                return await operation()
            except DefenseError:
                raise
            except self.retry_on:
                if attempt >= self.max_attempts:
                    raise
                if self.enabled:
                    if self.budget is not None and not self.budget.can_retry():
                        self.budget_refusals += 1
                        self._recorder.increment("retry_budget_refusals", policy=self.name)
                        raise
                    delay = self.backoff.delay(attempt)
                else:
                    delay = self.naive_delay
                self.retries += 1
                self._recorder.increment("retries", policy=self.name)
                if delay > 0:
                    await self._sleep(delay)
            attempt += 1

    def reset(self) -> None:
        """Zero the counters (and the budget, if any)."""
        self.attempts = self.retries = self.budget_refusals = 0
        if self.budget is not None:
            self.budget.reset()

    def snapshot(self) -> dict[str, object]:
        """Return the policy's settings and counters as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "max_attempts": self.max_attempts,
            "backoff": type(self.backoff).__name__,
            "attempts": self.attempts,
            "retries": self.retries,
            "budget_refusals": self.budget_refusals,
            "budget": self.budget.snapshot() if self.budget is not None else None,
        }
