"""Tests for SRE-book client-side adaptive throttling."""

from __future__ import annotations

import random

import pytest

from chaosemergence.defenses import AdaptiveThrottle, EventLog, LoadShedError

from .conftest import FakeClock, run_now


def test_no_rejections_while_backend_accepts(clock: FakeClock) -> None:
    """When every request is accepted the reject probability stays 0."""
    t = AdaptiveThrottle(clock=clock, rng=random.Random(1))
    for _ in range(1000):
        assert t.allow()
        t.record_accept()
    assert t.reject_probability() == 0.0


def test_probability_follows_the_sre_formula(clock: FakeClock) -> None:
    """p = max(0, (requests - K*accepts) / (requests + 1)) with K = 2."""
    t = AdaptiveThrottle(k=2.0, clock=clock, rng=random.Random(2))
    for i in range(100):
        t.allow()
        if i < 10:
            t.record_accept()
    assert t.reject_probability() == pytest.approx((100 - 2 * 10) / 101)


def test_failing_backend_is_throttled_locally(clock: FakeClock) -> None:
    """With a backend rejecting everything most requests are rejected locally."""
    t = AdaptiveThrottle(clock=clock, rng=random.Random(3))
    sent = sum(t.allow() for _ in range(2000))
    assert sent < 100
    assert t.local_rejections == 2000 - sent


def test_window_forgets_old_outcomes(clock: FakeClock) -> None:
    """Requests older than the window stop counting."""
    t = AdaptiveThrottle(window_seconds=10.0, clock=clock, rng=random.Random(4))
    for _ in range(100):
        t.allow()
    clock.advance(11)
    assert t.reject_probability() == 0.0


def test_call_raises_when_throttled_and_counts_accepts(clock: FakeClock) -> None:
    """call() raises LoadShedError on local rejection and counts non-rejection errors as accepts."""

    class Overloaded(Exception):
        pass

    t = AdaptiveThrottle(rejected_on=(Overloaded,), clock=clock, rng=random.Random(5))

    async def overloaded() -> str:
        raise Overloaded

    async def bad_request() -> str:
        raise ValueError("400")

    with pytest.raises(ValueError):
        run_now(t.call(bad_request))
    assert t.snapshot()["accepts"] == 1
    outcomes = []
    for _ in range(200):
        try:
            run_now(t.call(overloaded))
        except LoadShedError:
            outcomes.append("local")
        except Overloaded:
            outcomes.append("backend")
    assert outcomes.count("local") > 100


def test_events_when_throttling_starts_and_stops(clock: FakeClock, events: EventLog) -> None:
    """Throttling records one 'activated' and, once accepts recover, one 'deactivated'."""
    t = AdaptiveThrottle(clock=clock, rng=random.Random(6), events=events, window_seconds=10)
    for _ in range(50):
        t.allow()
    clock.advance(11)
    t.allow()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]
    assert events.all()[0].defense == "adaptive_throttle"


def test_disabled_throttle_always_allows(clock: FakeClock) -> None:
    """With enabled=False nothing is rejected locally."""
    t = AdaptiveThrottle(clock=clock, enabled=False)
    assert all(t.allow() for _ in range(500))
    assert t.snapshot()["local_rejections"] == 0


def test_reset_forgets_the_window_but_keeps_the_rejection_counter(clock: FakeClock) -> None:
    """A reset (staged recovery) stops throttling; the cumulative counter stays monotonic."""
    t = AdaptiveThrottle(clock=clock, rng=random.Random(1))
    rejected = sum(1 for _ in range(200) if not t.allow())
    assert rejected > 100 and t.reject_probability() > 0.9
    t.reset()
    assert t.reject_probability() == 0.0
    assert t.snapshot()["local_rejections"] == rejected
