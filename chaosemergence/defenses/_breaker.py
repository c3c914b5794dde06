"""Circuit breaker with CLOSED / OPEN / HALF_OPEN / EMERGENCY states and emergence awareness."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from ._errors import CircuitOpenError
from ._events import EventLog
from ._recorder import NULL_RECORDER, MetricsRecorder
from ._signals import EmergenceSignals, EmergenceThresholds
from ._types import Clock, T
from ._window import SlidingCounts

__all__ = [
    "BreakerConfig",
    "BreakerListener",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "EmergenceSignals",
]

DEFENSE = "circuit_breaker"

_CALLS, _FAILURES, _SLOW = 0, 1, 2


class BreakerState(StrEnum):
    """The four states of an emergence-aware circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    EMERGENCY = "emergency"


_CLOSED = BreakerState.CLOSED


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker trips, how long it stays open and how it probes for recovery.

    Defaults are the seed's: 5 consecutive failures, a 60 s detection window,
    open for 10 / 30 / 60 s at emergence risk <= 0.5 / <= 0.8 / above.
    ``failure_threshold=0`` turns the consecutive-failure rule off: the breaker then trips
    on its window's failure and slow-call rates only (for callers whose own fast retries
    would make any short blip a run of consecutive failures).
    """

    failure_threshold: int = 5
    window_seconds: float = 60.0
    minimum_calls: int = 20
    failure_rate_threshold: float = 0.5
    slow_call_seconds: float = 1.0
    slow_call_rate_threshold: float = 0.8
    half_open_max_calls: int = 1
    half_open_successes: int = 2
    open_durations: tuple[float, float, float] = (10.0, 30.0, 60.0)
    risk_levels: tuple[float, float] = (0.5, 0.8)
    emergency: EmergenceThresholds = field(default_factory=EmergenceThresholds)
    signal_ttl_seconds: float = 30.0
    exclude: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        problems = []
        if self.failure_threshold < 0:
            problems.append(f"failure_threshold={self.failure_threshold} must be >= 0")
        if self.window_seconds <= 0:
            problems.append(f"window_seconds={self.window_seconds} must be > 0")
        if self.minimum_calls < 1:
            problems.append(f"minimum_calls={self.minimum_calls} must be >= 1")
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                problems.append(f"{name}={value} must be in (0, 1]")
        if self.half_open_max_calls < 1 or self.half_open_successes < 1:
            problems.append("half_open_max_calls and half_open_successes must be >= 1")
        if any(d < 0 for d in self.open_durations):
            problems.append(f"open_durations={self.open_durations} must be >= 0")
        if problems:
            msg = "invalid BreakerConfig: " + "; ".join(problems)
            raise ValueError(msg)

    def open_duration(self, risk: float) -> float:
        """Return how long to stay open at emergence ``risk`` (seed: 10 / 30 / 60 s)."""
        low, medium = self.risk_levels
        if risk <= low:
            return self.open_durations[0]
        if risk <= medium:
            return self.open_durations[1]
        return self.open_durations[2]


BreakerListener = Callable[["CircuitBreaker", BreakerState, BreakerState, str], None]


class CircuitBreaker:
    """Stop calling a failing dependency, and serve the fallback while emergence is detected.

    Calls are never serialized: the state is read and updated in plain synchronous code
    between awaits, so no lock is held while the operation runs. Outcomes of calls that
    started before a state change (an older *generation*) are ignored.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
        listeners: tuple[BreakerListener, ...] = (),
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        self.name = name
        # Not on the CLOSED fast path: failures, rejections and transitions only.
        self._recorder = recorder
        self.config = config if config is not None else BreakerConfig()
        self._clock = clock
        self._events = events
        self._listeners = list(listeners)
        buckets = max(1, min(60, math.ceil(self.config.window_seconds)))
        self._slow_seconds = self.config.slow_call_seconds
        # All fields below are guarded by the event loop: they are read and written only
        # in synchronous code, never across an await, so no lock is needed.
        self._enabled = enabled
        self._state = BreakerState.CLOSED
        self._generation = 0  # bumped on every transition; stale outcomes are ignored
        self._consecutive_failures = 0
        self._window = SlidingCounts(self.config.window_seconds, 3, buckets)
        self._changed_at = clock()
        self._open_until = 0.0
        self._half_open_inflight = 0
        self._half_open_ok = 0
        self._signals: EmergenceSignals | None = None
        self._signals_at = -math.inf
        self._triggered: tuple[str, ...] = ()
        self._last_reason = "initial"
        self.calls = 0
        self.failures = 0
        self.rejections = 0
        self.fallbacks = 0
        self.transitions = 0

    # -- public state -------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the breaker protects calls; when False every call passes straight through."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if self._enabled and not value:
            self._transition(BreakerState.CLOSED, self._clock(), "breaker disabled")
        self._enabled = value

    @property
    def state(self) -> BreakerState:
        """The current state; an expired OPEN or a stale EMERGENCY reads as HALF_OPEN."""
        state = self._state
        if state is BreakerState.OPEN or state is BreakerState.EMERGENCY:
            now = self._clock()
            if state is BreakerState.OPEN and now >= self._open_until:
                self._transition(BreakerState.HALF_OPEN, now, "open duration elapsed")
            elif state is BreakerState.EMERGENCY and not self._fresh(now):
                self._transition(BreakerState.HALF_OPEN, now, "emergence signals went stale")
        return self._state

    @property
    def emergence_risk(self) -> float:
        """Emergence risk from the last fresh signals (0 when none or stale)."""
        if self._signals is None or not self._fresh(self._clock()):
            return 0.0
        return self.config.emergency.risk(self._signals)

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(breaker, old, new, reason)`` on every state change."""
        self._listeners.append(listener)

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[BaseException | None], Awaitable[T]] | None = None,
    ) -> T:
        """Run ``operation`` under the breaker.

        A rejected call runs ``fallback(CircuitOpenError)``, or raises ``CircuitOpenError``
        when there is no fallback. A failed call runs ``fallback(error)`` if given, else
        re-raises the error.
        """
        if not self._enabled:
            return await operation()
        self.calls += 1
        clock = self._clock
        start = clock()
        if self._state is not _CLOSED:
            return await self._call_guarded(operation, fallback, start)
        # Fast path for CLOSED: no lock, no allocation; state is re-checked afterwards
        # through the generation, since other calls may have changed it meanwhile.
        generation = self._generation
        try:
            result = await operation()
        except Exception as exc:
            return await self._failed(exc, generation, False, start, fallback)
        end = clock()
        if generation == self._generation:
            if end - start < self._slow_seconds:
                self._consecutive_failures = 0
                self._window.add(end, _CALLS)
            else:
                self._record(generation, False, end, start, False, None)
        return result

    async def _call_guarded(
        self,
        operation: Callable[[], Awaitable[T]],
        fallback: Callable[[BaseException | None], Awaitable[T]] | None,
        start: float,
    ) -> T:
        """Run a call outside CLOSED: admit it as a half-open probe or reject it."""
        admitted = self._admit(start)
        if admitted is None:
            return await self._reject(fallback, start)
        probe = admitted
        generation = self._generation
        try:
            result = await operation()
        except Exception as exc:
            return await self._failed(exc, generation, probe, start, fallback)
        except BaseException:
            # Cancellation or interpreter exit: release a probe slot, judge nothing.
            if probe and generation == self._generation:
                self._half_open_inflight -= 1
            raise
        self._record(generation, probe, self._clock(), start, False, None)
        return result

    async def _failed(
        self,
        exc: Exception,
        generation: int,
        probe: bool,
        start: float,
        fallback: Callable[[BaseException | None], Awaitable[T]] | None,
    ) -> T:
        """Account for a failed call, then serve the fallback or re-raise."""
        if isinstance(exc, self.config.exclude):
            self._record(generation, probe, self._clock(), start, False, None)
            raise exc
        self.failures += 1
        self._recorder.increment("breaker_failures", breaker=self.name)
        self._record(generation, probe, self._clock(), start, True, exc)
        if fallback is None:
            raise exc
        self.fallbacks += 1
        return await fallback(exc)

    async def _reject(
        self, fallback: Callable[[BaseException | None], Awaitable[T]] | None, now: float
    ) -> T:
        self.rejections += 1
        self._recorder.increment("breaker_rejections", breaker=self.name, state=self._state.value)
        retry_after = max(0.0, self._open_until - now) if self._state is BreakerState.OPEN else 0.0
        error = CircuitOpenError(self.name, self._state.value, retry_after)
        if fallback is None:
            raise error
        self.fallbacks += 1
        return await fallback(error)

    def _fresh(self, now: float) -> bool:
        return now - self._signals_at <= self.config.signal_ttl_seconds

    def _admit(self, now: float) -> bool | None:
        """Decide a call outside CLOSED: None rejects, True admits it as a half-open probe."""
        state = self._state
        if state is BreakerState.OPEN:
            if now < self._open_until:
                return None
            self._transition(BreakerState.HALF_OPEN, now, "open duration elapsed")
        elif state is BreakerState.EMERGENCY:
            if self._triggered and self._fresh(now):
                return None
            self._transition(BreakerState.HALF_OPEN, now, "emergence signals went stale")
        elif state is BreakerState.CLOSED:
            return False
        if self._half_open_inflight >= self.config.half_open_max_calls:
            return None
        self._half_open_inflight += 1
        return True

    def _record(
        self,
        generation: int,
        probe: bool,
        now: float,
        start: float,
        failed: bool,
        error: BaseException | None,
    ) -> None:
        if generation != self._generation:
            return  # the call started in an earlier state; its outcome no longer applies
        cfg = self.config
        slow = now - start >= cfg.slow_call_seconds
        if probe:
            self._half_open_inflight -= 1
            if failed or slow:
                what = f"probe failed: {error!r}" if failed else "probe was slow"
                self._transition(BreakerState.OPEN, now, what)
                return
            self._half_open_ok += 1
            if self._half_open_ok >= cfg.half_open_successes:
                self._transition(BreakerState.CLOSED, now, "half-open probes succeeded")
            return
        self._window.add_many(now, (1, int(failed), int(slow)))
        if not failed:
            self._consecutive_failures = 0
            if not slow:
                return
        else:
            self._consecutive_failures += 1
            if 0 < cfg.failure_threshold <= self._consecutive_failures:
                reason = f"{self._consecutive_failures} consecutive failures, last {error!r}"
                self._transition(BreakerState.OPEN, now, reason)
                return
        calls, failures, slows = self._window.totals(now)
        if calls < cfg.minimum_calls:
            return
        if failures / calls >= cfg.failure_rate_threshold:
            reason = f"failure rate {failures / calls:.0%} over {calls} calls"
            self._transition(BreakerState.OPEN, now, reason)
        elif slows / calls >= cfg.slow_call_rate_threshold:
            reason = f"slow-call rate {slows / calls:.0%} over {calls} calls"
            self._transition(BreakerState.OPEN, now, reason)

    # -- emergence signals and control --------------------------------------------------

    def report_signals(self, signals: EmergenceSignals) -> tuple[str, ...]:
        """Feed fresh emergence signals; enter EMERGENCY when one fires, leave when all clear.

        Returns the names of the fired patterns. Leaving EMERGENCY goes through HALF_OPEN.
        """
        now = self._clock()
        self._signals = signals
        self._signals_at = now
        self._triggered = self.config.emergency.triggered(signals)
        if not self._enabled:
            return self._triggered
        if self._triggered:
            if self._state is not BreakerState.EMERGENCY:
                reason = "emergence signals: " + ", ".join(self._triggered)
                self._transition(BreakerState.EMERGENCY, now, reason)
        elif self._state is BreakerState.EMERGENCY:
            self._transition(BreakerState.HALF_OPEN, now, "emergence signals cleared")
        return self._triggered

    def force_half_open(self, reason: str = "forced half-open") -> None:
        """Limit traffic to half-open probes now (the seed's phase defense)."""
        if self._enabled and self._state is not BreakerState.EMERGENCY:
            self._transition(BreakerState.HALF_OPEN, self._clock(), reason)

    def force_open(self, reason: str = "forced open", duration: float | None = None) -> None:
        """Open the breaker now, for ``duration`` seconds or the risk-adapted duration."""
        if not self._enabled:
            return
        now = self._clock()
        self._transition(BreakerState.OPEN, now, reason)
        if duration is not None:
            self._open_until = now + duration

    def reset(self) -> None:
        """Close the breaker and forget every outcome, signal and counter."""
        self._transition(BreakerState.CLOSED, self._clock(), "reset")
        self._window.clear()
        self._signals = None
        self._signals_at = -math.inf
        self._triggered = ()
        self.calls = self.failures = self.rejections = self.fallbacks = 0

    def _transition(self, new: BreakerState, now: float, reason: str) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._generation += 1
        self._changed_at = now
        self._last_reason = reason
        self._half_open_inflight = 0
        self._half_open_ok = 0
        self.transitions += 1
        self._recorder.increment("breaker_transitions", breaker=self.name, to=new.value)
        if new is BreakerState.OPEN:
            self._open_until = now + self.config.open_duration(self.emergence_risk)
        elif new is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._window.clear()
        if self._events is not None:
            if old is BreakerState.CLOSED:
                self._events.record(
                    DEFENSE, "activated", reason, breaker=self.name, state=new.value
                )
            elif new is BreakerState.CLOSED:
                self._events.record(
                    DEFENSE, "deactivated", reason, breaker=self.name, state=new.value
                )
        for listener in tuple(self._listeners):
            listener(self, old, new, reason)

    def snapshot(self) -> dict[str, object]:
        """Return the breaker's state, window and counters as JSON-able data."""
        now = self._clock()
        state = self.state
        calls, failures, slows = self._window.totals(now)
        return {
            "name": self.name,
            "enabled": self._enabled,
            "state": state.value,
            "since": self._changed_at,
            "reason": self._last_reason,
            "open_remaining": max(0.0, self._open_until - now)
            if state is BreakerState.OPEN
            else 0.0,
            "consecutive_failures": self._consecutive_failures,
            "window_calls": calls,
            "failure_rate": failures / calls if calls else 0.0,
            "slow_call_rate": slows / calls if calls else 0.0,
            "half_open_inflight": self._half_open_inflight,
            "emergence_risk": self.emergence_risk,
            "triggered": list(self._triggered),
            "signals": self._signals.as_dict() if self._signals else None,
            "calls": self.calls,
            "failures": self.failures,
            "rejections": self.rejections,
            "fallbacks": self.fallbacks,
            "transitions": self.transitions,
        }
