"""Tests for metastable detection and staged recovery."""

from __future__ import annotations

import random

import pytest

from chaosemergence.defenses import EventLog
from chaosemergence.defenses.control import RecoveryAction, RecoveryPhase, StagedRecovery
from chaosemergence.defenses.detect import MetastableDetector, StuckState, SystemState

from .conftest import FakeClock

HEALTHY = SystemState(load=0.75, p99_ms=50, cache_hit_rate=0.95, queue_depth=10)
STUCK_COLD = SystemState(load=0.45, p99_ms=5000, error_rate=0.35, cache_hit_rate=0.12)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (SystemState(load=0.5, p99_ms=600), True),
        (SystemState(load=0.5, p99_ms=100, cache_hit_rate=0.4), True),
        (SystemState(load=0.5, p99_ms=100, queue_depth=1001), True),
        (SystemState(load=0.7, p99_ms=5000), False),
        (SystemState(load=0.5, p99_ms=500, cache_hit_rate=0.5, queue_depth=1000), False),
    ],
)
def test_seed_signature(state: SystemState, expected: bool) -> None:
    """Low load (< 0.7) with p99 > 500 ms, hit rate < 0.5 or queue > 1000 is metastable."""
    assert MetastableDetector().is_metastable(state) is expected


def test_detection_needs_persistence(clock: FakeClock, events: EventLog) -> None:
    """One bad sample is noise; three in a row is a condition, recorded as an event."""
    detector = MetastableDetector(clock=clock, events=events, persistence=3)
    assert detector.observe(STUCK_COLD) is None
    assert detector.observe(HEALTHY) is None
    for _ in range(2):
        clock.advance(1)
        assert detector.observe(STUCK_COLD) is None
    condition = detector.observe(STUCK_COLD)
    assert condition is not None
    assert StuckState.COLD_CACHE in condition.stuck
    assert RecoveryAction.WARM_CACHES in condition.actions
    assert events.all()[0].defense == "metastable_detector"


@pytest.mark.parametrize(
    ("state", "stuck"),
    [
        (SystemState(load=0.4, p99_ms=900, cache_hit_rate=0.9, queue_depth=5000), "queue_buildup"),
        (SystemState(load=0.4, p99_ms=900, connection_use=1.0), "connection_exhaustion"),
        (SystemState(load=0.4, p99_ms=900, gc_time=0.4), "gc_pressure"),
    ],
)
def test_classification(clock: FakeClock, state: SystemState, stuck: str) -> None:
    """The stuck state is classified from the window's measurements."""
    detector = MetastableDetector(clock=clock, persistence=1)
    condition = detector.observe(state)
    assert condition is not None
    assert [s.value for s in condition.stuck] == [stuck]


def test_condition_clears_after_clean_samples(clock: FakeClock) -> None:
    """The condition ends after clear_after healthy samples in a row."""
    detector = MetastableDetector(clock=clock, persistence=1, clear_after=2)
    detector.observe(STUCK_COLD)
    detector.observe(HEALTHY)
    assert detector.condition is not None
    detector.observe(HEALTHY)
    assert detector.condition is None


def condition_for(clock: FakeClock) -> object:
    detector = MetastableDetector(clock=clock, persistence=1)
    return detector.observe(STUCK_COLD)


def test_staged_recovery_restores_in_seed_steps(clock: FakeClock, events: EventLog) -> None:
    """Pause, reset, then 1, 5, 10, 25, 50, 75, 100% with a check at every step."""
    recovery = StagedRecovery(clock=clock, events=events, step_seconds=30, pause_seconds=5)
    condition = condition_for(clock)
    assert recovery.start(condition)  # type: ignore[arg-type]
    assert recovery.admit_fraction == 0.0
    actions = recovery.tick(False)
    assert RecoveryAction.WARM_CACHES in actions
    assert recovery.tick(False) == ()  # actions are handed out once
    clock.advance(5)
    recovery.tick(False)
    fractions = []
    while recovery.phase is RecoveryPhase.RESTORING:
        fractions.append(recovery.admit_fraction)
        clock.advance(30)
        recovery.tick(False)
    assert fractions == [0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 1.0]
    assert recovery.phase is RecoveryPhase.IDLE
    assert [e.kind for e in events.all() if e.defense == "metastable_recovery"] == [
        "activated",
        "deactivated",
    ]


def test_relapse_pauses_again_and_reissues_actions(clock: FakeClock) -> None:
    """A relapse at a step's check pauses ingress again and repeats the reset actions."""
    recovery = StagedRecovery(clock=clock, step_seconds=10, pause_seconds=0)
    recovery.start(condition_for(clock))  # type: ignore[arg-type]
    recovery.tick(False)
    recovery.tick(False)
    assert recovery.phase is RecoveryPhase.RESTORING
    clock.advance(5)
    assert recovery.tick(True) == ()  # checked only at the end of the step
    clock.advance(5)
    actions = recovery.tick(True)
    assert recovery.phase is RecoveryPhase.PAUSED
    assert actions and recovery.relapses == 1


def _relapse_until_given_up(recovery: StagedRecovery, clock: FakeClock) -> int:
    """Tick a recovery through relapses until it gives up; return how many ticks it took."""
    for tick in range(1, 20):
        recovery.tick(False)
        clock.advance(1)
        recovery.tick(True)
        if recovery.phase is RecoveryPhase.MANUAL:
            return tick
    raise AssertionError(f"still {recovery.phase} after 19 relapses")


def test_gives_up_after_max_relapses_and_holds_ingress(clock: FakeClock, events: EventLog) -> None:
    """After max_relapses the recovery pauses ingress for good and asks for an operator."""
    recovery = StagedRecovery(
        clock=clock, events=events, step_seconds=1, pause_seconds=0, max_relapses=2
    )
    condition = condition_for(clock)
    recovery.start(condition)  # type: ignore[arg-type]
    assert _relapse_until_given_up(recovery, clock) == 3  # the third relapse is one too many
    assert recovery.admit_fraction == 0.0 and recovery.waiting_for_operator
    asked = [e for e in events.all() if e.defense == "manual_intervention"]
    assert [e.kind for e in asked] == ["activated"]
    assert "manual intervention required" in asked[0].reason
    # The detector still sees the condition: no new recovery lets traffic back in.
    assert not recovery.start(condition)  # type: ignore[arg-type]
    for _ in range(5):
        clock.advance(1)
        assert recovery.tick(True) == ()
    assert recovery.phase is RecoveryPhase.MANUAL and recovery.admit_fraction == 0.0
    assert recovery.snapshot()["manual_intervention_required"] is True


def test_resume_restores_in_steps_again(clock: FakeClock, events: EventLog) -> None:
    """An operator's resume restores traffic from the first step, relapses forgotten."""
    recovery = StagedRecovery(
        clock=clock, events=events, step_seconds=1, pause_seconds=0, max_relapses=0
    )
    assert not recovery.resume()  # nothing to resume
    recovery.start(condition_for(clock))  # type: ignore[arg-type]
    _relapse_until_given_up(recovery, clock)
    assert recovery.resume("fixed the database")
    assert recovery.phase is RecoveryPhase.RESTORING and recovery.relapses == 0
    assert recovery.admit_fraction == 0.01
    assert [e.kind for e in events.all() if e.defense == "manual_intervention"] == [
        "activated",
        "deactivated",
    ]
    while recovery.phase is RecoveryPhase.RESTORING:
        clock.advance(1)
        recovery.tick(False)
    assert recovery.phase is RecoveryPhase.IDLE and recovery.admit_fraction == 1.0


def test_reset_ends_a_manual_hold(clock: FakeClock, events: EventLog) -> None:
    """reset() admits all traffic again and records the end of the hold."""
    recovery = StagedRecovery(
        clock=clock, events=events, step_seconds=1, pause_seconds=0, max_relapses=0
    )
    recovery.start(condition_for(clock))  # type: ignore[arg-type]
    _relapse_until_given_up(recovery, clock)
    recovery.reset()
    assert recovery.phase is RecoveryPhase.IDLE and recovery.admit_fraction == 1.0
    assert events.all()[-1].defense == "manual_intervention"
    assert events.all()[-1].kind == "deactivated"


def test_should_admit_matches_fraction(clock: FakeClock) -> None:
    """At the 25% step about a quarter of requests are admitted."""
    recovery = StagedRecovery(
        clock=clock, rng=random.Random(1), steps=(25, 100), step_seconds=1, pause_seconds=0
    )
    recovery.start(condition_for(clock))  # type: ignore[arg-type]
    recovery.tick(False)
    share = sum(recovery.should_admit() for _ in range(4000)) / 4000
    assert share == pytest.approx(0.25, abs=0.03)


def test_disabled_recovery_never_starts(clock: FakeClock) -> None:
    """With enabled=False a detected condition does not pause ingress."""
    recovery = StagedRecovery(clock=clock, enabled=False)
    assert not recovery.start(condition_for(clock))  # type: ignore[arg-type]
    assert recovery.admit_fraction == 1.0


def test_invalid_steps_are_rejected() -> None:
    """Steps must be increasing percentages."""
    with pytest.raises(ValueError, match="steps"):
        StagedRecovery(steps=(50, 10))
