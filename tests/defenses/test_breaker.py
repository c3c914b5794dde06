"""Tests for the emergence-aware circuit breaker."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chaosemergence.defenses import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    EventLog,
)
from chaosemergence.defenses.detect import EmergenceSignals

from .conftest import FakeClock, run_now


class Boom(Exception):
    """The dependency failed."""


async def ok() -> str:
    return "ok"


async def fail() -> str:
    raise Boom("down")


def make(clock: FakeClock, events: EventLog | None = None, **config: object) -> CircuitBreaker:
    return CircuitBreaker("db", BreakerConfig(**config), clock=clock, events=events)  # type: ignore[arg-type]


def failures(breaker: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            run_now(breaker.call(fail))


def test_five_consecutive_failures_open_the_breaker(clock: FakeClock) -> None:
    """The seed's threshold: the fifth consecutive failure opens, the fourth does not."""
    breaker = make(clock)
    failures(breaker, 4)
    assert breaker.state is BreakerState.CLOSED
    failures(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    """A success between failures restarts the consecutive-failure count."""
    breaker = make(clock)
    failures(breaker, 4)
    assert run_now(breaker.call(ok)) == "ok"
    failures(breaker, 4)
    assert breaker.state is BreakerState.CLOSED


def test_open_rejects_without_calling(clock: FakeClock) -> None:
    """An open breaker raises CircuitOpenError and never runs the operation."""
    breaker = make(clock)
    failures(breaker, 5)
    called = []

    async def op() -> str:
        called.append(1)
        return "x"

    with pytest.raises(CircuitOpenError) as info:
        run_now(breaker.call(op))
    assert called == []
    assert info.value.retry_after == pytest.approx(10.0)
    assert breaker.rejections == 1


def test_fallback_serves_rejections_and_failures(clock: FakeClock) -> None:
    """The fallback gets the operation's error on failure and CircuitOpenError on rejection."""
    breaker = make(clock)
    seen: list[BaseException | None] = []

    async def fallback(exc: BaseException | None) -> str:
        seen.append(exc)
        return "cached"

    for _ in range(6):
        assert run_now(breaker.call(fail, fallback)) == "cached"
    assert all(isinstance(e, Boom) for e in seen[:5])
    assert isinstance(seen[5], CircuitOpenError)


def test_open_duration_follows_emergence_risk() -> None:
    """Open for 10 / 30 / 60 s at risk <= 0.5 / <= 0.8 / above (the seed's durations)."""
    config = BreakerConfig()
    assert config.open_duration(0.0) == 10.0
    assert config.open_duration(0.5) == 10.0
    assert config.open_duration(0.51) == 30.0
    assert config.open_duration(0.8) == 30.0
    assert config.open_duration(0.81) == 60.0


@pytest.mark.parametrize(("correlation", "expected"), [(0.0, 10.0), (0.6125, 30.0)])
def test_breaker_opens_for_the_risk_adapted_duration(
    clock: FakeClock, correlation: float, expected: float
) -> None:
    """A breaker tripping under medium emergence risk stays open 30 s instead of 10 s."""
    breaker = make(clock)
    breaker.report_signals(EmergenceSignals(correlation=correlation))
    failures(breaker, 5)
    clock.advance(expected - 0.01)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.02)
    assert breaker.state is BreakerState.HALF_OPEN


def test_failed_pattern_under_high_risk_opens_for_a_minute(clock: FakeClock) -> None:
    """Forcing open while emergence signals fire uses the 60 s duration."""
    breaker = make(clock)
    breaker.report_signals(EmergenceSignals(correlation=0.9))
    breaker.force_open("test")
    clock.advance(59)
    assert breaker.state is BreakerState.OPEN
    clock.advance(1.5)
    assert breaker.state is BreakerState.HALF_OPEN


def test_failure_rate_over_window_opens(clock: FakeClock) -> None:
    """Alternating failures (never 5 in a row) open once minimum calls and 50% rate are hit."""
    breaker = make(clock, minimum_calls=20)
    for i in range(19):
        if i % 2:
            run_now(breaker.call(ok))
        else:
            failures(breaker, 1)
    assert breaker.state is BreakerState.CLOSED
    run_now(breaker.call(ok))  # 20 calls, 10 failures: success cannot trip
    failures(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert "failure rate" in str(breaker.snapshot()["reason"])


def test_failures_outside_the_window_expire(clock: FakeClock) -> None:
    """Failures older than the window no longer count toward the failure rate."""
    breaker = make(clock, minimum_calls=10, window_seconds=10.0)
    for _ in range(3):
        failures(breaker, 4)
        run_now(breaker.call(ok))
        clock.advance(6)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["window_calls"] <= 10


def test_slow_calls_open_the_breaker(clock: FakeClock) -> None:
    """Successful but slow calls open the breaker once the slow-call rate is reached."""
    breaker = make(clock, minimum_calls=5, slow_call_seconds=1.0, slow_call_rate_threshold=0.8)

    async def slow() -> str:
        clock.advance(2.0)
        return "late"

    for _ in range(4):
        run_now(breaker.call(slow))
    assert breaker.state is BreakerState.CLOSED
    run_now(breaker.call(slow))
    assert breaker.state is BreakerState.OPEN


def _open_then_expire(breaker: CircuitBreaker, clock: FakeClock) -> None:
    failures(breaker, 5)
    clock.advance(10.5)


async def test_half_open_limits_concurrent_probes(clock: FakeClock) -> None:
    """In half-open only half_open_max_calls probes run at once; the rest are rejected."""
    breaker = make(clock, half_open_max_calls=2)
    _open_then_expire(breaker, clock)
    gate = asyncio.Event()
    started = 0

    async def probe() -> str:
        nonlocal started
        started += 1
        await gate.wait()
        return "ok"

    probes = [asyncio.create_task(breaker.call(probe)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(probe)
    assert started == 2
    gate.set()
    assert await asyncio.gather(*probes) == ["ok", "ok"]
    assert breaker.state is BreakerState.CLOSED


def test_half_open_probe_failure_reopens(clock: FakeClock) -> None:
    """A failed half-open probe opens the breaker again."""
    breaker = make(clock)
    _open_then_expire(breaker, clock)
    failures(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_half_open_closes_after_enough_successes(clock: FakeClock) -> None:
    """The breaker closes only after half_open_successes successful probes."""
    breaker = make(clock, half_open_successes=2)
    _open_then_expire(breaker, clock)
    run_now(breaker.call(ok))
    assert breaker.state is BreakerState.HALF_OPEN
    run_now(breaker.call(ok))
    assert breaker.state is BreakerState.CLOSED


async def test_calls_are_never_serialized(clock: FakeClock) -> None:
    """A hundred calls through one breaker are all in flight at the same time."""
    breaker = make(clock)
    gate = asyncio.Event()
    in_flight = 0
    peak = 0

    async def op() -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return 1

    tasks = [asyncio.create_task(breaker.call(op)) for _ in range(100)]
    while peak < 100:
        await asyncio.sleep(0)
    gate.set()
    assert sum(await asyncio.gather(*tasks)) == 100


async def test_cancelled_probe_releases_its_slot(clock: FakeClock) -> None:
    """Cancelling a half-open probe frees the slot for the next probe."""
    breaker = make(clock)
    _open_then_expire(breaker, clock)
    gate = asyncio.Event()

    async def hang() -> str:
        await gate.wait()
        return "never"

    task = asyncio.create_task(breaker.call(hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.call(ok) == "ok"


async def test_stale_outcomes_are_ignored(clock: FakeClock) -> None:
    """A call that started while closed and fails after the breaker opened is not a probe result."""
    breaker = make(clock, half_open_successes=1)
    gate = asyncio.Event()

    async def late_failure() -> str:
        await gate.wait()
        raise Boom("late")

    task = asyncio.create_task(breaker.call(late_failure))
    await asyncio.sleep(0)
    failures(breaker, 5)
    clock.advance(10.5)
    assert breaker.state is BreakerState.HALF_OPEN
    gate.set()
    with pytest.raises(Boom):
        await task
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "signals",
    [
        EmergenceSignals(retry_rate=0.06, retry_growth=1.6),
        EmergenceSignals(load=0.7, latency_ratio=11.0),
        EmergenceSignals(correlation=0.71),
    ],
    ids=["retry_storm", "phase_transition", "synchronization"],
)
def test_emergence_signals_enter_emergency(clock: FakeClock, signals: EmergenceSignals) -> None:
    """Each of the seed's emergence signals puts the breaker in EMERGENCY serving the fallback."""
    breaker = make(clock)
    assert breaker.report_signals(signals)
    assert breaker.state is BreakerState.EMERGENCY
    called = []

    async def op() -> str:
        called.append(1)
        return "live"

    async def fallback(exc: BaseException | None) -> str:
        return "fallback"

    assert run_now(breaker.call(op, fallback)) == "fallback"
    assert called == []


@pytest.mark.parametrize(
    "signals",
    [
        EmergenceSignals(retry_rate=0.06, retry_growth=1.5),
        EmergenceSignals(retry_rate=0.05, retry_growth=3.0),
        EmergenceSignals(load=0.65, latency_ratio=50.0),
        EmergenceSignals(load=0.9, latency_ratio=10.0),
        EmergenceSignals(correlation=0.7),
    ],
)
def test_signals_at_threshold_do_not_fire(clock: FakeClock, signals: EmergenceSignals) -> None:
    """Signals must be strictly above the seed's thresholds, and both halves of a pair must fire."""
    breaker = make(clock)
    assert breaker.report_signals(signals) == ()
    assert breaker.state is BreakerState.CLOSED


def test_emergency_leaves_through_half_open(clock: FakeClock, events: EventLog) -> None:
    """Cleared signals move EMERGENCY to HALF_OPEN, and successful probes close the breaker."""
    breaker = make(clock, events)
    breaker.report_signals(EmergenceSignals(correlation=0.9))
    breaker.report_signals(EmergenceSignals(correlation=0.2))
    assert breaker.state is BreakerState.HALF_OPEN
    run_now(breaker.call(ok))
    run_now(breaker.call(ok))
    assert breaker.state is BreakerState.CLOSED
    kinds = [(e.defense, e.kind) for e in events.all()]
    assert kinds == [("circuit_breaker", "activated"), ("circuit_breaker", "deactivated")]


def test_stale_emergency_signals_expire(clock: FakeClock) -> None:
    """Without fresh signals for signal_ttl_seconds, EMERGENCY falls back to probing."""
    breaker = make(clock, signal_ttl_seconds=30.0)
    breaker.report_signals(EmergenceSignals(correlation=0.9))
    clock.advance(31)
    assert run_now(breaker.call(ok)) == "ok"
    assert breaker.state is BreakerState.HALF_OPEN


def test_events_on_activation_and_deactivation(clock: FakeClock, events: EventLog) -> None:
    """Leaving CLOSED records one 'activated' event and closing records 'deactivated'."""
    breaker = make(clock, events)
    failures(breaker, 5)
    clock.advance(10.5)
    failures(breaker, 1)  # half-open probe fails: OPEN again, no new activation
    clock.advance(10.5)
    run_now(breaker.call(ok))
    run_now(breaker.call(ok))
    log = events.all()
    assert [e.kind for e in log] == ["activated", "deactivated"]
    assert log[0].defense == "circuit_breaker"
    assert log[0].detail["breaker"] == "db"
    assert "consecutive failures" in log[0].reason


def test_disabled_breaker_passes_through(clock: FakeClock) -> None:
    """With enabled=False failures never open the breaker and every call runs."""
    breaker = CircuitBreaker("db", clock=clock, enabled=False)
    failures(breaker, 50)
    assert breaker.state is BreakerState.CLOSED
    breaker.report_signals(EmergenceSignals(correlation=0.99))
    assert run_now(breaker.call(ok)) == "ok"


def test_disabling_closes_an_open_breaker(clock: FakeClock, events: EventLog) -> None:
    """Switching a tripped breaker off closes it and records the deactivation."""
    breaker = make(clock, events)
    failures(breaker, 5)
    breaker.enabled = False
    assert breaker.state is BreakerState.CLOSED
    assert events.all()[-1].kind == "deactivated"


def test_force_half_open_and_reset(clock: FakeClock) -> None:
    """force_half_open limits traffic to probes; reset closes and clears counters."""
    breaker = make(clock)
    breaker.force_half_open("phase defense")
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["calls"] == 0


def test_excluded_errors_do_not_count(clock: FakeClock) -> None:
    """Exceptions listed in exclude propagate but are not failures."""
    breaker = make(clock, exclude=(Boom,))
    failures(breaker, 10)
    assert breaker.state is BreakerState.CLOSED


def test_invalid_config_names_the_problem() -> None:
    """A bad configuration raises ValueError naming the field."""
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerConfig(failure_threshold=-1)


def test_without_a_consecutive_rule_only_the_failure_rate_trips(clock: FakeClock) -> None:
    """failure_threshold=0: a run of failures trips nothing until the window's rate does."""
    breaker = make(clock, failure_threshold=0, minimum_calls=20, failure_rate_threshold=0.5)
    for _ in range(30):
        run_now(breaker.call(ok))
    failures(breaker, 29)  # 29 of 59 calls: below half
    assert breaker.state is BreakerState.CLOSED
    failures(breaker, 1)  # 30 of 60: half
    assert breaker.state is BreakerState.OPEN


def test_snapshot_is_json_able(clock: FakeClock) -> None:
    """snapshot() contains the state and the seed's signals."""
    import json

    breaker = make(clock)
    breaker.report_signals(EmergenceSignals(load=0.5))
    snap = breaker.snapshot()
    assert snap["state"] == "closed"
    json.dumps(snap)


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of calls, time and signals keep the breaker's contract."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker = CircuitBreaker("m", clock=self.clock)
        self.consecutive = 0  # failures observed in a row while CLOSED
        self.last_rejected = False

    @rule()
    def succeed(self) -> None:
        state = self.breaker.state
        try:
            run_now(self.breaker.call(ok))
            self.last_rejected = False
        except CircuitOpenError:
            self.last_rejected = True
            assert state is not BreakerState.CLOSED
        if state is BreakerState.CLOSED:
            self.consecutive = 0

    @rule()
    def fail(self) -> None:
        state = self.breaker.state
        try:
            run_now(self.breaker.call(fail))
        except Boom:
            self.last_rejected = False
            assert state is not BreakerState.OPEN
            assert state is not BreakerState.EMERGENCY
        except CircuitOpenError:
            self.last_rejected = True
            assert state is not BreakerState.CLOSED
        if state is BreakerState.CLOSED and not self.last_rejected:
            self.consecutive += 1
            if self.consecutive >= 5:
                assert self.breaker.state is BreakerState.OPEN
        if self.breaker.state is not BreakerState.CLOSED:
            self.consecutive = 0

    @rule(seconds=st.floats(min_value=0, max_value=70))
    def wait(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.breaker.state is not BreakerState.CLOSED:
            self.consecutive = 0

    @rule(corr=st.floats(min_value=0, max_value=1))
    def signals(self, corr: float) -> None:
        fired = self.breaker.report_signals(EmergenceSignals(correlation=corr))
        if fired:
            assert self.breaker.state is BreakerState.EMERGENCY
        else:
            assert self.breaker.state is not BreakerState.EMERGENCY
        if self.breaker.state is not BreakerState.CLOSED:
            self.consecutive = 0

    @precondition(lambda self: self.breaker.state is BreakerState.OPEN)
    @rule()
    def open_rejects(self) -> None:
        with pytest.raises(CircuitOpenError):
            run_now(self.breaker.call(ok))

    @invariant()
    def consistent(self) -> None:
        snap = self.breaker.snapshot()
        assert snap["half_open_inflight"] == 0
        assert self.breaker.state in BreakerState
        assert self.consecutive < 5


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
