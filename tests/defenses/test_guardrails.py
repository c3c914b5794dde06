"""Tests for the death-spiral guardrails."""

from __future__ import annotations

import gc

import pytest

from chaosemergence.defenses import EventLog
from chaosemergence.defenses.control import (
    GcPressureBreaker,
    GuardrailLevel,
    MemoryGuardrail,
    PredictiveRestart,
)

from .conftest import FakeClock

MB = 1024 * 1024


class Memory:
    def __init__(self, used: float) -> None:
        self.used = used

    def __call__(self) -> float:
        return self.used


def test_guardrail_sheds_then_refuses(clock: FakeClock, events: EventLog) -> None:
    """Above 80% of the limit only critical work passes; above 95% nothing new does."""
    memory = Memory(50 * MB)
    guard = MemoryGuardrail(100 * MB, memory, clock=clock, events=events, min_interval=0)
    assert guard.admit()
    memory.used = 85 * MB
    assert not guard.admit() and guard.admit(critical=True)
    memory.used = 96 * MB
    assert not guard.admit(critical=True)
    assert guard.check() is GuardrailLevel.REFUSE
    memory.used = 50 * MB
    assert guard.admit()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]


def test_guardrail_hysteresis(clock: FakeClock) -> None:
    """Just under the shed threshold the guardrail keeps shedding until 5 points below."""
    memory = Memory(85 * MB)
    guard = MemoryGuardrail(100 * MB, memory, clock=clock, min_interval=0)
    guard.check()
    memory.used = 78 * MB
    assert guard.check() is GuardrailLevel.SHED
    memory.used = 74 * MB
    assert guard.check() is GuardrailLevel.OK


def test_guardrail_reads_at_most_every_interval(clock: FakeClock) -> None:
    """The memory reader is rate-limited by min_interval."""
    calls = []

    def reader() -> float:
        calls.append(1)
        return 0.0

    guard = MemoryGuardrail(100, reader, clock=clock, min_interval=1.0)
    for _ in range(10):
        guard.check()
    clock.advance(1.0)
    guard.check()
    assert len(calls) == 2


def test_disabled_guardrail_admits(clock: FakeClock) -> None:
    """With enabled=False work is accepted even at the limit."""
    guard = MemoryGuardrail(100, Memory(100), clock=clock, enabled=False)
    assert guard.admit()


def test_gc_breaker_opens_on_gc_share(clock: FakeClock, events: EventLog) -> None:
    """More than 10% of the window in GC refuses non-critical work; under 5% it closes."""
    breaker = GcPressureBreaker(0.1, 10.0, clock=clock, events=events)
    breaker.record_pause(0.5)
    assert breaker.allow()
    breaker.record_pause(0.8)
    assert not breaker.allow()
    assert breaker.allow(critical=True)
    clock.advance(11)
    assert breaker.allow()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]


def test_gc_breaker_measures_real_collections(clock: FakeClock) -> None:
    """attach() records interpreter GC pauses through gc.callbacks."""
    breaker = GcPressureBreaker(clock=clock)
    breaker.attach()
    try:
        gc.collect()
    finally:
        breaker.detach()
    assert breaker.gc_share() > 0.0
    assert breaker._on_gc not in gc.callbacks


def test_predictive_restart_on_rising_trend(clock: FakeClock, events: EventLog) -> None:
    """Memory growing 1 MB/s toward a 100 MB limit asks for a restart a minute ahead."""
    reasons: list[str] = []
    restart = PredictiveRestart(
        100 * MB, horizon_seconds=60, clock=clock, events=events, on_restart=reasons.append
    )
    used = 10 * MB
    requested_at = None
    for second in range(100):
        if restart.observe(used) and requested_at is None:
            requested_at = second
        used += MB
        clock.advance(1)
    # The 95 MB target is hit at second 85; the request comes about 60 s earlier.
    assert requested_at is not None and 20 <= requested_at <= 30
    assert len(reasons) == 1
    restart.acknowledge()
    assert not restart.requested
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]


def test_flat_memory_never_restarts(clock: FakeClock) -> None:
    """A flat memory profile, however high, below target never triggers a restart."""
    restart = PredictiveRestart(100 * MB, clock=clock)
    for _ in range(50):
        assert not restart.observe(80 * MB)
        clock.advance(1)
    assert restart.seconds_to_limit() is None


def test_invalid_limits_are_rejected() -> None:
    """Impossible thresholds raise ValueError."""
    with pytest.raises(ValueError):
        MemoryGuardrail(100, Memory(0), shed_at=0.9, refuse_at=0.8)
    with pytest.raises(ValueError):
        PredictiveRestart(0)
