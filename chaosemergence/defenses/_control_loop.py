"""The once-a-second control loop: measure, detect the six patterns, turn defenses up and down.

Event names it records: ``phase_defenses`` (breakers half-open, shed 30%, maximum
jitter, reinforce cells, alert) and ``pattern:<name>`` for each of the six patterns
(retry_storm, thundering_herd, death_spiral, synchronization, cascade, metastable).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ._breaker import CircuitBreaker
from ._events import EventLog
from ._jitter import Jitter
from ._metastable import MetastableDetector, RecoveryAction, StagedRecovery, SystemState
from ._shedding import ComplexityInputs, LoadShedder
from ._signals import EmergenceSignals, EmergenceThresholds
from ._types import Clock, Sleep
from ._xfetch import StampedeDetector, StampedeSignals

__all__ = [
    "PATTERNS",
    "ControlLoop",
    "ControlLoopConfig",
    "LoopInputs",
    "LoopReport",
    "PatternDetector",
]

PATTERNS: tuple[str, ...] = (
    "retry_storm",
    "thundering_herd",
    "death_spiral",
    "synchronization",
    "cascade",
    "metastable",
)


def ramp(x: float, low: float, high: float) -> float:
    """Return 0 below ``low``, 1 above ``high`` and a straight line in between."""
    if x != x or x <= low:
        return 0.0
    if x >= high:
        return 1.0
    return (x - low) / (high - low)


@dataclass(frozen=True, slots=True)
class LoopInputs:
    """One second's measurements of the system (every field optional).

    ``load`` is offered load over capacity; latencies are in milliseconds;
    ``memory_usage`` is the share of the memory limit in use; ``unhealthy_cells`` the
    share of cells that are unhealthy; ``cascade_risk`` the seed's
    0.6 x cross-cell dependencies + 0.4 x shared resources.
    """

    load: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    error_rate: float = 0.0
    retry_rate: float = 0.0
    retry_growth: float = 1.0
    correlation: float = 0.0
    cache_hit_rate: float = 1.0
    request_rate: float = 0.0
    waiters: int = 0
    queue_depth: float = 0.0
    connection_use: float = 0.0
    gc_time: float = 0.0
    memory_usage: float = 0.0
    unhealthy_cells: float = 0.0
    cascade_risk: float = 0.0
    complexity: ComplexityInputs | None = None

    @property
    def latency_ratio(self) -> float:
        """p99 / p50 (1 when p50 is unknown)."""
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else 1.0

    def signals(self) -> EmergenceSignals:
        """Return the breaker's emergence signals."""
        return EmergenceSignals(
            self.retry_rate, self.retry_growth, self.load, self.latency_ratio, self.correlation
        )

    def system_state(self) -> SystemState:
        """Return the metastable detector's sample."""
        return SystemState(
            self.load,
            self.p99_ms,
            self.error_rate,
            self.cache_hit_rate,
            self.queue_depth,
            self.connection_use,
            self.gc_time,
        )

    def stampede(self) -> StampedeSignals:
        """Return the stampede detector's inputs."""
        return StampedeSignals(
            1.0 - self.cache_hit_rate, self.request_rate, self.waiters, self.p50_ms, self.p99_ms
        )


@dataclass(frozen=True, slots=True)
class ControlLoopConfig:
    """Hysteresis of the loop: turn up above ``*_on``, down after ``calm_ticks`` below ``*_off``."""

    phase_on: float = 0.7
    phase_off: float = 0.5
    pattern_on: float = 0.5
    pattern_off: float = 0.3
    calm_ticks: int = 5
    emergency_shed: float = 0.3
    thresholds: EmergenceThresholds = field(default_factory=EmergenceThresholds)


class PatternDetector:
    """Turn one second's measurements into a probability for each of the six patterns.

    The seed's trigger levels sit at probability 0.5: retry rate 5% growing 1.5x,
    2 of 4 stampede indicators, correlation 0.7, memory at 82.5% of its limit,
    30% of cells unhealthy or cascade risk 0.1.
    """

    def __init__(self, stampede: StampedeDetector | None = None) -> None:
        # Guarded by the control loop (one tick at a time).
        self.stampede = stampede if stampede is not None else StampedeDetector()

    def scan(self, x: LoopInputs, metastable_share: float = 0.0) -> dict[str, float]:
        """Return each pattern's probability in [0, 1]."""
        forming = min(ramp(x.retry_rate, 0.0, 0.1), ramp(x.retry_growth, 1.0, 2.0))
        sustained = ramp(x.retry_rate, 0.1, 0.3)
        self.stampede.observe(x.stampede())
        herd = self.stampede.risk()
        spiral = max(ramp(x.memory_usage, 0.7, 0.95), ramp(x.gc_time, 0.05, 0.25))
        sync = ramp(abs(x.correlation), 0.5, 0.9)
        cascade = max(ramp(x.unhealthy_cells, 0.1, 0.5), ramp(x.cascade_risk, 0.0, 0.2))
        return {
            "retry_storm": max(forming, sustained),
            "thundering_herd": herd,
            "death_spiral": spiral,
            "synchronization": sync,
            "cascade": cascade,
            "metastable": metastable_share,
        }


@dataclass(frozen=True, slots=True)
class LoopReport:
    """What one tick measured and decided."""

    at: float
    phase_risk: float
    patterns: dict[str, float]
    complexity: float | None
    shed_level: str | None
    metastable: bool
    recovery_phase: str | None
    recovery_actions: tuple[RecoveryAction, ...]
    active: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """Return the report as JSON-able data."""
        return {
            "at": self.at,
            "phase_risk": self.phase_risk,
            "patterns": dict(self.patterns),
            "complexity": self.complexity,
            "shed_level": self.shed_level,
            "metastable": self.metastable,
            "recovery_phase": self.recovery_phase,
            "recovery_actions": [a.value for a in self.recovery_actions],
            "active": list(self.active),
        }


class _Hysteresis:
    """On above ``on``; off only after ``calm`` consecutive readings below ``off``."""

    __slots__ = ("active", "below", "calm", "off", "on")

    def __init__(self, on: float, off: float, calm: int) -> None:
        self.on, self.off, self.calm = on, off, calm
        self.active = False
        self.below = 0

    def update(self, value: float) -> bool | None:
        """Return True when it turns on, False when it turns off, None otherwise."""
        if value >= self.on:
            self.below = 0
            if not self.active:
                self.active = True
                return True
            return None
        if self.active:
            self.below = self.below + 1 if value < self.off else 0
            if self.below >= self.calm:
                self.active = False
                self.below = 0
                return False
        return None


class ControlLoop:
    """Run once a second: feed the breakers, detect patterns, shed, recover, and log why.

    Everything is optional: give it the defenses the service has. ``tick(inputs)`` is
    synchronous and never sleeps; ``run`` calls it every ``interval`` seconds. With
    ``enabled=False`` it still measures and reports but turns every defense down.
    """

    def __init__(
        self,
        *,
        breakers: Iterable[CircuitBreaker] = (),
        shedder: LoadShedder | None = None,
        jitters: Iterable[Jitter] = (),
        metastable: MetastableDetector | None = None,
        recovery: StagedRecovery | None = None,
        stampede: StampedeDetector | None = None,
        config: ControlLoopConfig | None = None,
        on_alert: Callable[[str, str], None] | None = None,
        on_reinforce: Callable[[bool], None] | None = None,
        on_pattern: Callable[[str, bool, float], None] | None = None,
        name: str = "control_loop",
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        self.name = name
        self.config = config if config is not None else ControlLoopConfig()
        self.breakers = list(breakers)
        self.shedder = shedder
        self.jitters = list(jitters)
        self.metastable = metastable
        self.recovery = recovery
        self.detector = PatternDetector(stampede)
        self.enabled = enabled
        self._on_alert = on_alert
        self._on_reinforce = on_reinforce
        self._on_pattern = on_pattern
        self._clock = clock
        self._events = events
        cfg = self.config
        # Guarded by the event loop: tick() runs to completion without awaiting.
        self._phase = _Hysteresis(cfg.phase_on, cfg.phase_off, cfg.calm_ticks)
        self._patterns = {
            p: _Hysteresis(cfg.pattern_on, cfg.pattern_off, cfg.calm_ticks) for p in PATTERNS
        }
        self._calm_complexity = 0
        self._last: LoopReport | None = None
        self.ticks = 0
        self.errors = 0
        self.last_error: str | None = None

    # -- measurement -----------------------------------------------------------------

    def phase_risk(self, x: LoopInputs) -> float:
        """Return proximity to the phase transition in [0, 1] (the seed acts above 0.7).

        The larger of the phase-transition signal (load and p99/p50) and the retry-storm
        signal, each scored 0.8 at the seed's threshold.
        """
        t = self.config.thresholds
        s = x.signals()
        phase = min(s.load / t.load, s.latency_ratio / t.latency_ratio)
        retry = min(s.retry_rate / t.retry_rate, s.retry_growth / t.retry_growth)
        return ramp(0.8 * max(phase, retry), 0.0, 1.0)

    # -- the loop ----------------------------------------------------------------------

    def tick(self, inputs: LoopInputs) -> LoopReport:
        """Run one iteration of the control loop on ``inputs``."""
        now = self._clock()
        self.ticks += 1
        cfg = self.config
        signals = inputs.signals()
        for breaker in self.breakers:
            breaker.report_signals(signals)
        for jitter in self.jitters:
            jitter.correlation = inputs.correlation

        metastable_now = False
        share = 0.0
        condition = None
        if self.metastable is not None:
            condition = self.metastable.observe(inputs.system_state())
            metastable_now = self.metastable.is_metastable(inputs.system_state())
            share = 1.0 if condition is not None else self.metastable.matching_share()
        patterns = self.detector.scan(inputs, share)
        risk = self.phase_risk(inputs)

        if not self.enabled:
            self._turn_everything_down("control loop disabled")
            report = LoopReport(now, risk, patterns, None, None, metastable_now, None, (), ())
            self._last = report
            return report

        change = self._phase.update(risk)
        if change is True:
            self._phase_defenses(True, f"phase-transition risk {risk:.2f} > {cfg.phase_on}")
        elif change is False:
            self._phase_defenses(False, f"phase-transition risk {risk:.2f} calm")

        for pattern, probability in patterns.items():
            turned = self._patterns[pattern].update(probability)
            if turned is not None:
                self._pattern_response(pattern, turned, probability)

        complexity = None
        level = None
        if self.shedder is not None:
            if inputs.complexity is not None:
                complexity = self.shedder.budget.score(inputs.complexity)
                self._shed(complexity)
            level = self.shedder.level.name

        actions: tuple[RecoveryAction, ...] = ()
        phase = None
        if self.recovery is not None:
            if condition is not None:
                self.recovery.start(condition)
            actions = self.recovery.tick(metastable_now)
            phase = self.recovery.phase.value

        report = LoopReport(
            now, risk, patterns, complexity, level, metastable_now, phase, actions, self.active()
        )
        self._last = report
        return report

    def _shed(self, score: float) -> None:
        """Raise the shedding level at once; lower it only after calm ticks."""
        assert self.shedder is not None
        current = self.shedder.budget.level(self.shedder.score)
        wanted = self.shedder.budget.level(score)
        if wanted.shed_fraction >= current.shed_fraction:
            self._calm_complexity = 0
            self.shedder.update(score)
            return
        self._calm_complexity += 1
        if self._calm_complexity >= self.config.calm_ticks:
            self._calm_complexity = 0
            self.shedder.update(score)

    def _record(self, defense: str, on: bool, reason: str, **detail: object) -> None:
        if self._events is None:
            return
        if on:
            self._events.record(defense, "activated", reason, **detail)
        else:
            self._events.record(defense, "deactivated", reason, **detail)

    def _phase_defenses(self, on: bool, reason: str) -> None:
        """The seed's phase defenses: half-open breakers, shed 30%, max jitter, reinforce, alert."""
        self._record("phase_defenses", on, reason)
        if on:
            for breaker in self.breakers:
                breaker.force_half_open(reason)
            if self.shedder is not None:
                self.shedder.emergency_shed(self.config.emergency_shed, reason)
            for jitter in self.jitters:
                jitter.set_maximum(True, reason)
            if self._on_alert is not None:
                self._on_alert("System approaching phase transition", "critical")
        else:
            if self.shedder is not None:
                self.shedder.clear_override(reason)
            if not self._patterns["synchronization"].active:
                for jitter in self.jitters:
                    jitter.set_maximum(False, reason)
        # Boundaries stay reinforced while a cascade is still detected.
        if self._on_reinforce is not None and (on or not self._patterns["cascade"].active):
            self._on_reinforce(on)

    def _pattern_response(self, pattern: str, on: bool, probability: float) -> None:
        verb = "detected" if on else "receded"
        reason = f"{pattern} {verb} (probability {probability:.2f})"
        self._record(f"pattern:{pattern}", on, reason, probability=probability)
        if pattern == "synchronization" and not self._phase.active:
            # Correlation breaking: maximum jitter until the correlation falls.
            for jitter in self.jitters:
                jitter.set_maximum(on, reason)
        if pattern == "cascade" and self._on_reinforce is not None and not self._phase.active:
            self._on_reinforce(on)
        if on and self._on_alert is not None:
            self._on_alert(reason, "warning")
        if self._on_pattern is not None:
            self._on_pattern(pattern, on, probability)

    def _turn_everything_down(self, reason: str) -> None:
        if self._phase.active:
            self._phase.active = False
            self._phase_defenses(False, reason)
        for pattern, state in self._patterns.items():
            if state.active:
                state.active = False
                self._pattern_response(pattern, False, 0.0)

    def active(self) -> tuple[str, ...]:
        """Return the names of the responses currently turned up."""
        names = ["phase_defenses"] if self._phase.active else []
        names += [f"pattern:{p}" for p, h in self._patterns.items() if h.active]
        return tuple(names)

    async def run(
        self,
        read: Callable[[], LoopInputs | Awaitable[LoopInputs]],
        *,
        interval: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        stop: asyncio.Event | None = None,
        iterations: int | None = None,
    ) -> None:
        """Tick every ``interval`` seconds with ``read()``'s measurements until ``stop`` is set.

        A failing ``read`` or tick is counted in ``errors`` and the loop goes on.
        """
        done = 0
        while (stop is None or not stop.is_set()) and (iterations is None or done < iterations):
            try:
                measured = read()
                inputs = await measured if inspect.isawaitable(measured) else measured
                assert isinstance(inputs, LoopInputs)
                self.tick(inputs)
            except Exception as exc:  # the loop must survive a bad measurement
                self.errors += 1
                self.last_error = repr(exc)
            done += 1
            if iterations is None or done < iterations:
                await sleep(interval)

    def reset(self) -> None:
        """Turn every response down and forget hysteresis state."""
        self._turn_everything_down("reset")
        self._calm_complexity = 0
        self._last = None
        self.errors = 0

    def snapshot(self) -> dict[str, object]:
        """Return the last report and active responses as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "ticks": self.ticks,
            "errors": self.errors,
            "last_error": self.last_error,
            "active": list(self.active()),
            "last": self._last.as_dict() if self._last else None,
        }
