"""Detect metastable failure (low load, bad service) and recover from it in stages."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ._events import EventLog
from ._types import Clock

__all__ = [
    "MANUAL_INTERVENTION",
    "RESTORE_STEPS",
    "MetastableCondition",
    "MetastableDetector",
    "MetastableThresholds",
    "RecoveryAction",
    "RecoveryPhase",
    "StagedRecovery",
    "StuckState",
    "SystemState",
]

DETECTOR = "metastable_detector"
RECOVERY = "metastable_recovery"
#: The event a recovery that gave up records (activated) and an operator's resume ends.
MANUAL_INTERVENTION = "manual_intervention"

#: The seed's traffic restoration steps, in percent.
RESTORE_STEPS: tuple[int, ...] = (1, 5, 10, 25, 50, 75, 100)


@dataclass(frozen=True, slots=True)
class SystemState:
    """One sample of the system.

    ``load`` is offered user load relative to capacity (demand, not utilization), so a
    system stuck after its trigger is gone shows low load and bad service.
    ``connection_use`` is the share of the connection pool in use, ``gc_time`` the
    share of wall time spent in garbage collection.
    """

    load: float
    p99_ms: float
    error_rate: float = 0.0
    cache_hit_rate: float = 1.0
    queue_depth: float = 0.0
    connection_use: float = 0.0
    gc_time: float = 0.0


class StuckState(StrEnum):
    """Which stable bad state the system is stuck in."""

    COLD_CACHE = "cold_cache"
    QUEUE_BUILDUP = "queue_buildup"
    CONNECTION_EXHAUSTION = "connection_exhaustion"
    GC_PRESSURE = "gc_pressure"


class RecoveryAction(StrEnum):
    """A reset step of the recovery plan."""

    WARM_CACHES = "warm_caches"
    DRAIN_QUEUES = "drain_queues"
    RESET_CONNECTIONS = "reset_connections"
    FORCE_GC = "force_gc"


_ACTION_FOR: dict[StuckState, RecoveryAction] = {
    StuckState.COLD_CACHE: RecoveryAction.WARM_CACHES,
    StuckState.QUEUE_BUILDUP: RecoveryAction.DRAIN_QUEUES,
    StuckState.CONNECTION_EXHAUSTION: RecoveryAction.RESET_CONNECTIONS,
    StuckState.GC_PRESSURE: RecoveryAction.FORCE_GC,
}


@dataclass(frozen=True, slots=True)
class MetastableThresholds:
    """The seed's signature (load < 0.7 and (p99 > 500 ms or hit rate < 0.5 or queue > 1000)).

    ``connection_use`` and ``gc_time`` only classify the stuck state.
    """

    load_below: float = 0.7
    p99_ms_above: float = 500.0
    hit_rate_below: float = 0.5
    queue_above: float = 1000.0
    connection_use_above: float = 0.95
    gc_time_above: float = 0.2

    def matches(self, s: SystemState) -> bool:
        """Return True when ``s`` shows the metastable signature."""
        return s.load < self.load_below and (
            s.p99_ms > self.p99_ms_above
            or s.cache_hit_rate < self.hit_rate_below
            or s.queue_depth > self.queue_above
        )


@dataclass(frozen=True, slots=True)
class MetastableCondition:
    """A detected metastable failure: when, what it is stuck in, and the recovery plan."""

    detected_at: float
    state: SystemState
    stuck: tuple[StuckState, ...]
    actions: tuple[RecoveryAction, ...]

    def as_dict(self) -> dict[str, object]:
        """Return the condition as JSON-able data."""
        return {
            "detected_at": self.detected_at,
            "load": self.state.load,
            "p99_ms": self.state.p99_ms,
            "cache_hit_rate": self.state.cache_hit_rate,
            "queue_depth": self.state.queue_depth,
            "stuck": [s.value for s in self.stuck],
            "actions": [a.value for a in self.actions],
        }


class MetastableDetector:
    """Watch a sliding window of states; report a condition once the signature persists.

    ``persistence`` consecutive matching samples are required (one sample is noise),
    and ``clear_after`` consecutive clean samples end the detection.
    """

    def __init__(
        self,
        window_seconds: float = 60.0,
        thresholds: MetastableThresholds | None = None,
        *,
        persistence: int = 3,
        clear_after: int = 3,
        name: str = DETECTOR,
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        self.name = name
        self.window_seconds = window_seconds
        self.thresholds = thresholds if thresholds is not None else MetastableThresholds()
        self.persistence = max(1, persistence)
        self.clear_after = max(1, clear_after)
        self.enabled = enabled
        self._clock = clock
        self._events = events
        # Guarded by the event loop (sync code only).
        self._history: deque[tuple[float, SystemState]] = deque()
        self._matching = 0  # consecutive samples showing the signature
        self._clean = 0  # consecutive samples without it
        self._condition: MetastableCondition | None = None

    @property
    def condition(self) -> MetastableCondition | None:
        """The active condition, or None."""
        return self._condition

    def is_metastable(self, state: SystemState) -> bool:
        """Return True when one state shows the seed's signature."""
        return self.thresholds.matches(state)

    def observe(self, state: SystemState) -> MetastableCondition | None:
        """Add a sample; return the active condition (None when healthy or disabled)."""
        now = self._clock()
        self._history.append((now, state))
        while self._history and now - self._history[0][0] > self.window_seconds:
            self._history.popleft()
        if not self.enabled:
            return None
        if self.thresholds.matches(state):
            self._matching += 1
            self._clean = 0
            if self._condition is None and self._matching >= self.persistence:
                stuck = self.classify([s for _, s in self._history])
                actions = tuple(_ACTION_FOR[s] for s in stuck) or (
                    RecoveryAction.DRAIN_QUEUES,
                    RecoveryAction.WARM_CACHES,
                )
                self._condition = MetastableCondition(now, state, stuck, actions)
                if self._events is not None:
                    reason = (
                        f"load {state.load:.2f} but p99 {state.p99_ms:.0f} ms, hit rate "
                        f"{state.cache_hit_rate:.2f}, queue {state.queue_depth:.0f}"
                    )
                    self._events.record(
                        self.name, "activated", reason, stuck=[s.value for s in stuck]
                    )
        else:
            self._matching = 0
            self._clean += 1
            if self._condition is not None and self._clean >= self.clear_after:
                self._condition = None
                if self._events is not None:
                    self._events.record(self.name, "deactivated", "signature cleared")
        return self._condition

    def classify(self, window: Sequence[SystemState]) -> tuple[StuckState, ...]:
        """Return the stuck states the window shows, most specific first."""
        if not window:
            return ()
        t = self.thresholds
        recent = window[-self.persistence :]
        n = len(recent)
        stuck: list[StuckState] = []
        if sum(s.cache_hit_rate for s in recent) / n < t.hit_rate_below:
            stuck.append(StuckState.COLD_CACHE)
        growing = len(window) >= 2 and window[-1].queue_depth > window[0].queue_depth * 1.5 > 0
        if sum(s.queue_depth for s in recent) / n > t.queue_above or growing:
            stuck.append(StuckState.QUEUE_BUILDUP)
        if sum(s.connection_use for s in recent) / n > t.connection_use_above:
            stuck.append(StuckState.CONNECTION_EXHAUSTION)
        if sum(s.gc_time for s in recent) / n > t.gc_time_above:
            stuck.append(StuckState.GC_PRESSURE)
        return tuple(stuck)

    def matching_share(self) -> float:
        """Return the share of samples in the window that show the signature."""
        if not self._history:
            return 0.0
        return sum(self.thresholds.matches(s) for _, s in self._history) / len(self._history)

    def reset(self) -> None:
        """Forget the window and any active condition."""
        self._history.clear()
        self._matching = self._clean = 0
        if self._condition is not None:
            self._condition = None
            if self._events is not None:
                self._events.record(self.name, "deactivated", "reset")

    def snapshot(self) -> dict[str, object]:
        """Return the detection state as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "samples": len(self._history),
            "matching_share": self.matching_share(),
            "condition": self._condition.as_dict() if self._condition else None,
        }


class RecoveryPhase(StrEnum):
    """Where a staged recovery is."""

    IDLE = "idle"
    PAUSED = "paused"
    RESTORING = "restoring"
    #: Gave up after too many relapses: ingress stays paused until ``resume()`` or ``reset()``.
    MANUAL = "manual"


class StagedRecovery:
    """Pause ingress, reset state, then restore traffic in steps, re-checking every step.

    Driven by ``tick(metastable_now)`` calls (once a second is fine) and an injected
    clock. ``tick`` returns the reset actions the caller must perform now (once per
    pause). Each restoration step lasts ``step_seconds`` (seed: 30 s); at the end of a
    step a relapse sends it back to PAUSED, otherwise it moves to the next step. After
    100% it goes back to IDLE.

    A relapse after ``max_relapses`` relapses makes it give up, as the seed's guardian does
    ("Recovery failed: Manual intervention required"): it pauses ingress (the seed pauses
    before it returns the error), records a ``manual_intervention`` event and stays in
    MANUAL, admitting nothing and starting no new recovery, until an operator calls
    ``resume()`` (restore in steps again, relapses forgotten) or ``reset()``. Letting
    traffic back in on its own would only feed the loop it could not break.
    """

    def __init__(
        self,
        *,
        steps: Sequence[int] = RESTORE_STEPS,
        step_seconds: float = 30.0,
        pause_seconds: float = 5.0,
        max_relapses: int = 3,
        name: str = RECOVERY,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
            msg = f"steps must be increasing percentages in (0, 100], got {list(steps)!r}"
            raise ValueError(msg)
        self.name = name
        self.steps = tuple(steps) if steps[-1] == 100 else (*steps, 100)
        self.step_seconds = step_seconds
        self.pause_seconds = pause_seconds
        self.max_relapses = max_relapses
        self.enabled = enabled
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._events = events
        # Guarded by the event loop (sync code only).
        self._phase = RecoveryPhase.IDLE
        self._step = 0
        self._since = clock()
        self._condition: MetastableCondition | None = None
        self._pending: tuple[RecoveryAction, ...] = ()
        self._last_reason = ""
        self.relapses = 0
        self.recoveries = 0
        self.give_ups = 0

    @property
    def phase(self) -> RecoveryPhase:
        """The current phase."""
        return self._phase

    @property
    def admit_fraction(self) -> float:
        """Share of ingress to admit now: 0 while paused or held for an operator, the step's
        share while restoring."""
        if self._phase is RecoveryPhase.PAUSED or self._phase is RecoveryPhase.MANUAL:
            return 0.0
        if self._phase is RecoveryPhase.RESTORING:
            return self.steps[self._step] / 100.0
        return 1.0

    def should_admit(self) -> bool:
        """Draw whether to admit one request at the current fraction."""
        fraction = self.admit_fraction
        return fraction >= 1.0 or (fraction > 0.0 and self._rng.random() < fraction)

    def start(self, condition: MetastableCondition) -> bool:
        """Begin a recovery for ``condition``; False if disabled, already recovering, or
        waiting for an operator."""
        busy = (RecoveryPhase.PAUSED, RecoveryPhase.RESTORING, RecoveryPhase.MANUAL)
        if not self.enabled or self._phase in busy:
            return False
        self._condition = condition
        self.relapses = 0
        self._pause(f"metastable: {', '.join(s.value for s in condition.stuck) or 'unknown'}")
        if self._events is not None:
            self._events.record(
                self.name,
                "activated",
                "ingress paused for metastable recovery",
                actions=[a.value for a in condition.actions],
            )
        return True

    def _pause(self, reason: str) -> None:
        self._phase = RecoveryPhase.PAUSED
        self._step = 0
        self._since = self._clock()
        self._pending = self._condition.actions if self._condition else ()
        self._last_reason = reason

    def tick(self, metastable_now: bool) -> tuple[RecoveryAction, ...]:
        """Advance the recovery; return reset actions to perform now (usually none)."""
        if self._phase is RecoveryPhase.PAUSED:
            actions, self._pending = self._pending, ()
            if self._clock() - self._since >= self.pause_seconds:
                self._phase = RecoveryPhase.RESTORING
                self._step = 0
                self._since = self._clock()
            return actions
        if self._phase is not RecoveryPhase.RESTORING:
            return ()
        now = self._clock()
        if now - self._since < self.step_seconds:
            return ()
        if metastable_now:
            self.relapses += 1
            if self.relapses > self.max_relapses:
                self._give_up()
                return ()
            self._pause(f"relapse at {self.steps[self._step]}% traffic")
            actions, self._pending = self._pending, ()
            return actions
        if self._step + 1 < len(self.steps):
            self._step += 1
            self._since = now
            return ()
        self._phase = RecoveryPhase.IDLE
        self.recoveries += 1
        if self._events is not None:
            self._events.record(self.name, "deactivated", "traffic fully restored")
        return ()

    def _give_up(self) -> None:
        """Pause ingress for good and ask for an operator (MANUAL)."""
        step = self.steps[self._step]
        self._phase = RecoveryPhase.MANUAL
        self._step = 0
        self._since = self._clock()
        self._pending = ()
        self._last_reason = (
            f"relapsed {self.relapses} times (last at {step}% traffic): manual intervention "
            "required; ingress stays paused until resumed"
        )
        self.give_ups += 1
        if self._events is not None:
            self._events.record(
                MANUAL_INTERVENTION,
                "activated",
                f"metastable recovery failed: {self._last_reason}",
                relapses=self.relapses,
                step_percent=step,
            )

    @property
    def waiting_for_operator(self) -> bool:
        """Whether the recovery gave up and waits for ``resume()`` (MANUAL)."""
        return self._phase is RecoveryPhase.MANUAL

    def resume(self, reason: str = "resumed by an operator") -> bool:
        """End a MANUAL hold: restore traffic in steps again, relapses forgotten.

        Returns False (and does nothing) when the recovery is not waiting for an operator.
        """
        if self._phase is not RecoveryPhase.MANUAL:
            return False
        self.relapses = 0
        self._phase = RecoveryPhase.RESTORING
        self._step = 0
        self._since = self._clock()
        self._last_reason = reason
        if self._events is not None:
            self._events.record(MANUAL_INTERVENTION, "deactivated", reason)
        return True

    def reset(self) -> None:
        """Stop any recovery (a MANUAL hold included) and admit all traffic."""
        active = self._phase in (RecoveryPhase.PAUSED, RecoveryPhase.RESTORING)
        manual = self._phase is RecoveryPhase.MANUAL
        self._phase = RecoveryPhase.IDLE
        self._step = 0
        self._pending = ()
        self._condition = None
        self.relapses = 0
        if self._events is not None:
            if active:
                self._events.record(self.name, "deactivated", "reset")
            if manual:
                self._events.record(MANUAL_INTERVENTION, "deactivated", "reset")

    def snapshot(self) -> dict[str, object]:
        """Return the phase, step and admitted share as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "phase": self._phase.value,
            "admit_fraction": self.admit_fraction,
            "step_percent": self.steps[self._step]
            if self._phase is RecoveryPhase.RESTORING
            else None,
            "reason": self._last_reason,
            "relapses": self.relapses,
            "max_relapses": self.max_relapses,
            "recoveries": self.recoveries,
            "give_ups": self.give_ups,
            "manual_intervention_required": self._phase is RecoveryPhase.MANUAL,
            "condition": self._condition.as_dict() if self._condition else None,
        }
