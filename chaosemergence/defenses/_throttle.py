"""Client-side adaptive throttling: reject locally before an overloaded backend has to."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

from ._errors import LoadShedError
from ._events import EventLog
from ._recorder import NULL_RECORDER, MetricsRecorder
from ._types import Clock, T
from ._window import SlidingCounts

__all__ = ["AdaptiveThrottle"]

DEFENSE = "adaptive_throttle"
_REQUESTS, _ACCEPTS = 0, 1


class AdaptiveThrottle:
    """The SRE book's client-side throttle over a sliding window.

    Each request is rejected locally with probability
    ``max(0, (requests - k * accepts) / (requests + 1))`` where ``requests`` counts every
    attempt (local rejections included) and ``accepts`` those the backend accepted,
    both over the last ``window_seconds`` (the book uses two minutes and k = 2).
    """

    def __init__(
        self,
        k: float = 2.0,
        window_seconds: float = 120.0,
        *,
        name: str = DEFENSE,
        rejected_on: tuple[type[BaseException], ...] = (Exception,),
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        events: EventLog | None = None,
        enabled: bool = True,
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        if k < 1.0 or window_seconds <= 0:
            msg = f"need k >= 1 and window_seconds > 0, got {k=}, {window_seconds=}"
            raise ValueError(msg)
        self.name = name
        self.k = k
        self.rejected_on = rejected_on
        self.enabled = enabled
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._events = events
        self._recorder = recorder
        # Guarded by the event loop (sync code only): requests and accepts per bucket.
        self._counts = SlidingCounts(window_seconds, 2, 60)
        self._throttling = False  # guarded by the event loop; True while p > 0
        self.local_rejections = 0

    def reject_probability(self) -> float:
        """Return the current local rejection probability."""
        requests, accepts = self._counts.totals(self._clock())
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def allow(self) -> bool:
        """Count one request and decide whether to send it (False = reject locally)."""
        if not self.enabled:
            return True
        now = self._clock()
        requests, accepts = self._counts.totals(now)
        p = max(0.0, (requests - self.k * accepts) / (requests + 1))
        self._counts.add(now, _REQUESTS)
        self._note(p, requests, accepts)
        if p > 0.0 and self._rng.random() < p:
            self.local_rejections += 1
            self._recorder.increment("throttle_local_rejections", throttle=self.name)
            return False
        return True

    def record_accept(self) -> None:
        """Count one request the backend accepted."""
        if self.enabled:
            self._counts.add(self._clock(), _ACCEPTS)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` unless throttled; raise ``LoadShedError`` when rejected locally.

        Errors in ``rejected_on`` mean the backend refused the request; anything else,
        and success, count as accepted.
        """
        if not self.enabled:
            return await operation()
        now = self._clock()
        requests, accepts = self._counts.totals(now)
        p = max(0.0, (requests - self.k * accepts) / (requests + 1))
        self._note(p, requests, accepts)
        if p > 0.0 and self._rng.random() < p:
            self._counts.add(now, _REQUESTS)
            self.local_rejections += 1
            self._recorder.increment("throttle_local_rejections", throttle=self.name)
            msg = f"rejected locally with probability {p:.2f}"
            raise LoadShedError(self.name, msg)
        # Counted once it resolves: a call still in flight is neither accepted nor refused, so
        # a burst of concurrent calls from idle is not throttled before any could be accepted.
        try:
            result = await operation()
        except self.rejected_on:
            self._counts.add(self._clock(), _REQUESTS)
            raise
        except Exception:
            self._counts.add_many(self._clock(), (1, 1))
            raise
        self._counts.add_many(self._clock(), (1, 1))
        return result

    def _note(self, p: float, requests: int, accepts: int) -> None:
        if p > 0.0 and not self._throttling:
            self._throttling = True
            if self._events is not None:
                reason = f"backend accepted {accepts} of {requests} requests"
                self._events.record(self.name, "activated", reason, probability=p)
        elif p == 0.0 and self._throttling:
            self._throttling = False
            if self._events is not None:
                reason = "backend accepts enough requests again"
                self._events.record(self.name, "deactivated", reason, probability=p)

    def reset(self) -> None:
        """Forget the window and stop throttling.

        ``local_rejections`` is a counter (exported as one) and stays monotonic: a staged
        recovery that resets the client must not erase what the throttle already did.
        """
        self._counts.clear()
        self._note(0.0, 0, 0)

    def snapshot(self) -> dict[str, object]:
        """Return the window counts and rejection probability as JSON-able data."""
        requests, accepts = self._counts.totals(self._clock())
        return {
            "name": self.name,
            "enabled": self.enabled,
            "k": self.k,
            "requests": requests,
            "accepts": accepts,
            "reject_probability": max(0.0, (requests - self.k * accepts) / (requests + 1)),
            "throttling": self._throttling,
            "local_rejections": self.local_rejections,
        }
