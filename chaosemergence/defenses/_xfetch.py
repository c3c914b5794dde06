"""Thundering-herd helpers: probabilistic early expiration, hot-key tracking, stampede risk."""

from __future__ import annotations

import heapq
import math
import random
import time
from dataclasses import dataclass

from ._events import EventLog
from ._types import Clock

__all__ = [
    "HotKeyTracker",
    "ProbabilisticExpiry",
    "StampedeDetector",
    "StampedeSignals",
    "should_refresh",
]


def should_refresh(
    now: float, expiry: float, delta: float, beta: float = 1.0, u: float = 0.5
) -> bool:
    """XFetch: refresh early when ``now - delta * beta * ln(u) >= expiry``.

    ``delta`` is how long the value takes to recompute, ``u`` a uniform draw in (0, 1].
    Since ln(u) <= 0, callers refresh a little before expiry, earlier for values that
    are slow to compute, so one caller refreshes instead of all of them at expiry.
    """
    return now - delta * beta * math.log(u) >= expiry


class ProbabilisticExpiry:
    """Decide early refreshes with XFetch using an injected clock and random generator."""

    def __init__(
        self,
        beta: float = 1.0,
        *,
        name: str = "probabilistic_expiry",
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        enabled: bool = True,
    ) -> None:
        if beta <= 0:
            msg = f"beta must be > 0, got {beta!r}"
            raise ValueError(msg)
        self.name = name
        self.beta = beta
        self.enabled = enabled
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.early_refreshes = 0

    def should_refresh(self, expiry: float, delta: float) -> bool:
        """Return True when this caller should recompute a value expiring at ``expiry``.

        Disabled, it refreshes only once the value has expired (the naive cache).
        """
        now = self._clock()
        if not self.enabled:
            return now >= expiry
        u = 1.0 - self._rng.random()  # in (0, 1], never log(0)
        refresh = should_refresh(now, expiry, delta, self.beta, u)
        if refresh and now < expiry:
            self.early_refreshes += 1
        return refresh

    def reset(self) -> None:
        """Zero the counter."""
        self.early_refreshes = 0

    def snapshot(self) -> dict[str, object]:
        """Return settings and counter as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "beta": self.beta,
            "early_refreshes": self.early_refreshes,
        }


class HotKeyTracker:
    """Track the most requested keys with exponentially decaying counts.

    Uses forward decay: a hit at time t weighs ``exp((t - t0) / tau)``, so old hits fade
    without touching every counter. Keeps at most ``capacity`` keys (the coldest are
    dropped). ``hottest(n)`` gives the keys to prewarm after an invalidation.
    """

    def __init__(
        self,
        capacity: int = 1000,
        half_life_seconds: float = 60.0,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        if capacity < 1 or half_life_seconds <= 0:
            msg = f"need capacity >= 1 and half_life_seconds > 0, got {capacity=}"
            raise ValueError(msg)
        self.capacity = capacity
        self._tau = half_life_seconds / math.log(2)
        self._clock = clock
        # Guarded by the event loop (sync code only).
        self._t0 = clock()
        self._scores: dict[str, float] = {}

    def record(self, key: str, weight: float = 1.0) -> None:
        """Count one request for ``key``."""
        exponent = (self._clock() - self._t0) / self._tau
        if exponent > 50:  # rescale before the weights overflow
            self._rebase()
            exponent = (self._clock() - self._t0) / self._tau
        self._scores[key] = self._scores.get(key, 0.0) + weight * math.exp(exponent)
        if len(self._scores) > 2 * self.capacity:
            keep = heapq.nlargest(self.capacity, self._scores.items(), key=lambda kv: kv[1])
            self._scores = dict(keep)

    def _rebase(self) -> None:
        now = self._clock()
        factor = math.exp(-(now - self._t0) / self._tau)
        self._scores = {k: v * factor for k, v in self._scores.items() if v * factor > 1e-12}
        self._t0 = now

    def hottest(self, n: int) -> list[str]:
        """Return the ``n`` hottest keys, hottest first."""
        top = heapq.nlargest(n, self._scores.items(), key=lambda kv: kv[1])
        return [k for k, _ in top]

    def rate(self, key: str) -> float:
        """Return ``key``'s decayed hit count as of now."""
        factor = math.exp(-(self._clock() - self._t0) / self._tau)
        return self._scores.get(key, 0.0) * factor

    def reset(self) -> None:
        """Forget every key."""
        self._scores.clear()
        self._t0 = self._clock()

    def __len__(self) -> int:
        return len(self._scores)


@dataclass(frozen=True, slots=True)
class StampedeSignals:
    """The seed's four stampede indicators' inputs."""

    miss_rate: float
    request_rate: float
    waiters: int
    p50: float
    p99: float


class StampedeDetector:
    """Switch to emergency mode when 2 of the seed's 4 stampede indicators fire.

    Indicators: cache miss rate > 0.2, request rate > 5x baseline, more than 100
    coalesced waiters, p99 > 10x p50. The baseline is a slow moving average of the
    request rate, frozen while in emergency. Emergency ends after ``clear_after``
    consecutive checks below the trigger.
    """

    def __init__(
        self,
        *,
        miss_rate: float = 0.2,
        rate_multiple: float = 5.0,
        waiters: int = 100,
        latency_multiple: float = 10.0,
        required: int = 2,
        baseline_alpha: float = 0.05,
        clear_after: int = 3,
        name: str = "stampede_protection",
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        self.name = name
        self.miss_rate = miss_rate
        self.rate_multiple = rate_multiple
        self.waiters = waiters
        self.latency_multiple = latency_multiple
        self.required = required
        self.baseline_alpha = baseline_alpha
        self.clear_after = clear_after
        self.enabled = enabled
        self._events = events
        # Guarded by the event loop (sync code only).
        self.baseline: float | None = None
        self._emergency = False
        self._calm = 0
        self._last: tuple[str, ...] = ()

    def indicators(self, s: StampedeSignals) -> tuple[str, ...]:
        """Return the names of the indicators that fire for ``s``."""
        fired: list[str] = []
        if s.miss_rate > self.miss_rate:
            fired.append("miss_rate")
        # A zero baseline (an idle start) is no baseline: any traffic would read as a surge.
        if self.baseline and s.request_rate > self.rate_multiple * self.baseline:
            fired.append("request_rate")
        if s.waiters > self.waiters:
            fired.append("waiters")
        if s.p50 > 0 and s.p99 > self.latency_multiple * s.p50:
            fired.append("latency")
        return tuple(fired)

    def observe(self, s: StampedeSignals) -> bool:
        """Add one measurement; return whether emergency mode is on."""
        fired = self.indicators(s)
        self._last = fired
        risky = len(fired) >= self.required
        if not self._emergency:
            if not self.baseline:
                self.baseline = s.request_rate
            elif not risky:
                a = self.baseline_alpha
                self.baseline = (1 - a) * self.baseline + a * s.request_rate
        if not self.enabled:
            return False
        if risky:
            self._calm = 0
            if not self._emergency:
                self._emergency = True
                if self._events is not None:
                    self._events.record(
                        self.name, "activated", "stampede risk: " + ", ".join(fired)
                    )
        elif self._emergency:
            self._calm += 1
            if self._calm >= self.clear_after:
                self._emergency = False
                if self._events is not None:
                    self._events.record(self.name, "deactivated", "stampede indicators cleared")
        return self._emergency

    @property
    def emergency(self) -> bool:
        """Whether emergency mode (coalesce everything, prewarm, serve stale) is on."""
        return self._emergency

    def risk(self) -> float:
        """Return the share of indicators that fired at the last check."""
        return len(self._last) / 4.0

    def reset(self) -> None:
        """Leave emergency mode and forget the baseline."""
        if self._emergency and self._events is not None:
            self._events.record(self.name, "deactivated", "reset")
        self._emergency = False
        self._calm = 0
        self.baseline = None
        self._last = ()

    def snapshot(self) -> dict[str, object]:
        """Return the mode and last indicators as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "emergency": self._emergency,
            "indicators": list(self._last),
            "baseline_rate": self.baseline,
        }
