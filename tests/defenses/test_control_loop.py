"""Tests for the once-a-second control loop."""

from __future__ import annotations

import asyncio
import random

import pytest

from chaosemergence.defenses import BreakerState, CircuitBreaker, EventLog, Jitter, LoadShedder
from chaosemergence.defenses.control import ControlLoop, LoopInputs, RecoveryPhase, StagedRecovery
from chaosemergence.defenses.detect import ComplexityInputs, MetastableDetector

from .conftest import FakeClock

CALM = LoopInputs(load=0.3, p50_ms=10, p99_ms=30, cache_hit_rate=0.95, request_rate=100)
NEAR_TRANSITION = LoopInputs(load=0.8, p50_ms=10, p99_ms=200, cache_hit_rate=0.95, request_rate=100)


def make_loop(clock: FakeClock, events: EventLog, **kw: object) -> ControlLoop:
    breaker = CircuitBreaker("db", clock=clock, events=events)
    shedder = LoadShedder(clock=clock, rng=random.Random(1), events=events)
    jitter = Jitter(rng=random.Random(2), events=events, adaptive_distribution="uniform")
    return ControlLoop(
        breakers=[breaker],
        shedder=shedder,
        jitters=[jitter],
        clock=clock,
        events=events,
        **kw,  # type: ignore[arg-type]
    )


def test_phase_risk_scores_the_seed_thresholds(clock: FakeClock, events: EventLog) -> None:
    """Phase risk is 0.8 at load 0.65 with p99/p50 10, and low in calm conditions."""
    loop = make_loop(clock, events)
    at_threshold = LoopInputs(load=0.65, p50_ms=10, p99_ms=100)
    assert loop.phase_risk(at_threshold) == pytest.approx(0.8)
    assert loop.phase_risk(CALM) < 0.3


def test_phase_defenses_turn_on_together(clock: FakeClock, events: EventLog) -> None:
    """Above 0.7 risk: breakers half-open, 30% shed, maximum jitter, alert, one event."""
    alerts: list[tuple[str, str]] = []
    reinforced: list[bool] = []
    loop = make_loop(
        clock, events, on_alert=lambda m, s: alerts.append((m, s)), on_reinforce=reinforced.append
    )
    report = loop.tick(NEAR_TRANSITION)
    assert report.phase_risk > 0.7
    assert "phase_defenses" in report.active
    assert loop.breakers[0].state in (BreakerState.HALF_OPEN, BreakerState.EMERGENCY)
    assert loop.shedder is not None and loop.shedder.level.shed_fraction == pytest.approx(0.3)
    assert loop.jitters[0].maximum
    assert alerts[0][1] == "critical" and reinforced == [True]
    phase_events = [e for e in events.all() if e.defense == "phase_defenses"]
    assert [e.kind for e in phase_events] == ["activated"]
    assert "risk" in phase_events[0].reason


def test_defenses_come_down_only_after_calm_ticks(clock: FakeClock, events: EventLog) -> None:
    """Turning down needs calm_ticks calm seconds in a row, so alternating inputs never flap."""
    loop = make_loop(clock, events)
    loop.tick(NEAR_TRANSITION)
    for _ in range(10):
        loop.tick(CALM)
        loop.tick(NEAR_TRANSITION)
    assert [e.kind for e in events.all() if e.defense == "phase_defenses"] == ["activated"]
    for _ in range(5):
        report = loop.tick(CALM)
    assert "phase_defenses" not in report.active
    assert loop.shedder is not None and loop.shedder.level.shed_fraction == 0.0
    assert not loop.jitters[0].maximum
    kinds = [e.kind for e in events.all() if e.defense == "phase_defenses"]
    assert kinds == ["activated", "deactivated"]


@pytest.mark.parametrize(
    ("pattern", "inputs"),
    [
        ("retry_storm", LoopInputs(retry_rate=0.2, retry_growth=1.0)),
        ("retry_storm", LoopInputs(retry_rate=0.06, retry_growth=2.0)),
        ("thundering_herd", LoopInputs(cache_hit_rate=0.5, waiters=500, p50_ms=1, p99_ms=2)),
        ("death_spiral", LoopInputs(memory_usage=0.9)),
        ("synchronization", LoopInputs(correlation=0.8)),
        ("cascade", LoopInputs(unhealthy_cells=0.4)),
    ],
)
def test_each_pattern_is_detected(
    clock: FakeClock, events: EventLog, pattern: str, inputs: LoopInputs
) -> None:
    """Each pattern's seed signals push its probability to 0.5 or more and record an event."""
    loop = make_loop(clock, events)
    report = loop.tick(inputs)
    assert report.patterns[pattern] >= 0.5
    assert f"pattern:{pattern}" in report.active
    assert any(e.defense == f"pattern:{pattern}" and e.kind == "activated" for e in events.all())


def test_calm_inputs_detect_nothing(clock: FakeClock, events: EventLog) -> None:
    """Healthy measurements give every pattern a probability below 0.5."""
    loop = make_loop(clock, events)
    report = loop.tick(CALM)
    assert all(p < 0.5 for p in report.patterns.values()), report.patterns
    assert report.active == ()
    assert events.all() == []


def test_synchronization_raises_jitter_until_correlation_falls(
    clock: FakeClock, events: EventLog
) -> None:
    """Correlation breaking: maximum jitter while correlated, normal again once it falls."""
    loop = make_loop(clock, events)
    loop.tick(LoopInputs(correlation=0.9))
    assert loop.jitters[0].maximum
    for _ in range(5):
        loop.tick(LoopInputs(correlation=0.1))
    assert not loop.jitters[0].maximum


def test_breakers_get_the_emergence_signals(clock: FakeClock, events: EventLog) -> None:
    """Each tick feeds the breakers, which enter EMERGENCY on a retry storm."""
    loop = make_loop(clock, events)
    loop.tick(LoopInputs(retry_rate=0.1, retry_growth=2.0))
    assert loop.breakers[0].state is BreakerState.EMERGENCY


def test_complexity_score_drives_shedding_with_hysteresis(
    clock: FakeClock, events: EventLog
) -> None:
    """A high complexity score sheds at once; shedding eases only after calm ticks."""
    loop = make_loop(clock, events)
    hot = LoopInputs(
        complexity=ComplexityInputs(request_rate=1000, retry_amplification=3.0, unique_users=10_000)
    )
    cool = LoopInputs(complexity=ComplexityInputs())
    report = loop.tick(hot)
    assert report.complexity is not None and report.complexity >= 0.5
    assert report.shed_level == "yellow"
    for _ in range(4):
        assert loop.tick(cool).shed_level == "yellow"
    assert loop.tick(cool).shed_level == "green"


def test_metastable_check_starts_staged_recovery(clock: FakeClock, events: EventLog) -> None:
    """A persistent metastable signature starts the staged recovery and hands out actions."""
    detector = MetastableDetector(clock=clock, events=events, persistence=2)
    recovery = StagedRecovery(clock=clock, events=events)
    loop = make_loop(clock, events, metastable=detector, recovery=recovery)
    stuck = LoopInputs(load=0.4, p50_ms=100, p99_ms=5000, cache_hit_rate=0.1)
    loop.tick(stuck)
    report = loop.tick(stuck)
    assert report.metastable and report.recovery_phase == "paused"
    assert report.recovery_actions
    assert recovery.phase is RecoveryPhase.PAUSED
    assert report.patterns["metastable"] == 1.0


def test_disabled_loop_turns_everything_down(clock: FakeClock, events: EventLog) -> None:
    """Switching the loop off deactivates its responses and takes no new action."""
    loop = make_loop(clock, events)
    loop.tick(NEAR_TRANSITION)
    loop.enabled = False
    report = loop.tick(NEAR_TRANSITION)
    assert report.active == ()
    assert [e.kind for e in events.all() if e.defense == "phase_defenses"] == [
        "activated",
        "deactivated",
    ]


async def test_run_ticks_with_injected_sleep(clock: FakeClock, events: EventLog) -> None:
    """run() ticks once per interval through the injected sleep and survives bad reads."""
    loop = make_loop(clock, events)
    slept: list[float] = []
    reads = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    def read() -> LoopInputs:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise RuntimeError("metrics unavailable")
        return CALM

    await loop.run(read, sleep=sleep, iterations=4)
    assert loop.ticks == 3 and loop.errors == 1
    assert slept == [1.0, 1.0, 1.0]
    stop = asyncio.Event()
    stop.set()
    await loop.run(read, sleep=sleep, stop=stop)
    assert loop.ticks == 3


def test_snapshot_and_reset(clock: FakeClock, events: EventLog) -> None:
    """snapshot() shows the last report; reset() turns responses down."""
    loop = make_loop(clock, events)
    loop.tick(NEAR_TRANSITION)
    assert loop.snapshot()["active"] == ["phase_defenses"]
    loop.reset()
    assert loop.snapshot()["active"] == []


def test_cascade_risk_reinforces_boundaries(clock: FakeClock, events: EventLog) -> None:
    """Cascade risk at the seed's alert level (0.1) is a cascade forming: reinforce."""
    reinforced: list[bool] = []
    loop = make_loop(clock, events, on_reinforce=reinforced.append)
    report = loop.tick(LoopInputs(load=0.3, p50_ms=10, p99_ms=30, cascade_risk=0.1))
    assert report.patterns["cascade"] == pytest.approx(0.5)
    assert "pattern:cascade" in report.active and reinforced == [True]
    for _ in range(5):
        loop.tick(CALM)
    assert reinforced == [True, False]


def test_boundaries_stay_reinforced_while_a_cascade_outlives_the_phase_defenses(
    clock: FakeClock, events: EventLog
) -> None:
    """Phase defenses ending do not relax boundaries the cascade response still needs."""
    reinforced: list[bool] = []
    loop = make_loop(clock, events, on_reinforce=reinforced.append)
    cascading = LoopInputs(load=0.3, p50_ms=10, p99_ms=30, cascade_risk=0.3)
    near_and_cascading = LoopInputs(
        load=0.8, p50_ms=10, p99_ms=200, cache_hit_rate=0.95, cascade_risk=0.3
    )
    loop.tick(near_and_cascading)
    assert {"phase_defenses", "pattern:cascade"} <= set(loop.active())
    for _ in range(5):
        loop.tick(cascading)  # phase risk calm, cascade still there
    assert "phase_defenses" not in loop.active() and "pattern:cascade" in loop.active()
    assert reinforced[-1] is True
    for _ in range(5):
        loop.tick(CALM)
    assert reinforced[-1] is False
