"""Tests for probabilistic early expiration, hot keys and stampede detection."""

from __future__ import annotations

import random

import pytest

from chaosemergence.defenses import EventLog, ProbabilisticExpiry, should_refresh
from chaosemergence.defenses.detect import HotKeyTracker, StampedeDetector, StampedeSignals

from .conftest import FakeClock


def test_xfetch_formula() -> None:
    """Refresh when now - delta * beta * ln(u) >= expiry."""
    assert should_refresh(now=100.0, expiry=100.0, delta=1.0, u=1.0)
    assert not should_refresh(now=99.0, expiry=100.0, delta=1.0, u=0.5)  # 99 + 0.69 < 100
    assert should_refresh(now=99.0, expiry=100.0, delta=2.0, u=0.5)  # 99 + 1.39 >= 100


def test_early_refreshes_are_rare_far_from_expiry(clock: FakeClock) -> None:
    """Far from expiry almost nobody refreshes; near expiry most callers would."""
    xfetch = ProbabilisticExpiry(clock=clock, rng=random.Random(1))
    clock.now = 0.0
    far = sum(xfetch.should_refresh(expiry=10.0, delta=1.0) for _ in range(10_000))
    clock.now = 9.9
    near = sum(xfetch.should_refresh(expiry=10.0, delta=1.0) for _ in range(10_000))
    assert far < 10
    assert near > 8_000


def test_refresh_probability_matches_exponential_tail(clock: FakeClock) -> None:
    """At gap g before expiry, P(refresh) = exp(-g / (delta * beta))."""
    xfetch = ProbabilisticExpiry(beta=1.0, clock=clock, rng=random.Random(2))
    clock.now = 9.0
    share = sum(xfetch.should_refresh(expiry=10.0, delta=1.0) for _ in range(20_000)) / 20_000
    assert share == pytest.approx(0.3679, abs=0.015)


def test_disabled_refreshes_only_at_expiry(clock: FakeClock) -> None:
    """Disabled, values are recomputed only once expired (everyone at once)."""
    xfetch = ProbabilisticExpiry(clock=clock, enabled=False)
    clock.now = 9.99
    assert not xfetch.should_refresh(expiry=10.0, delta=100.0)
    clock.now = 10.0
    assert xfetch.should_refresh(expiry=10.0, delta=0.0)


def test_hot_keys_rank_by_decayed_hits(clock: FakeClock) -> None:
    """Recent hits outweigh old ones, and the hottest keys come first."""
    tracker = HotKeyTracker(capacity=100, half_life_seconds=10.0, clock=clock)
    for _ in range(100):
        tracker.record("old")
    clock.advance(100)  # ten half-lives: 100 hits decay to about 0.1
    for _ in range(5):
        tracker.record("new")
    tracker.record("newer")
    assert tracker.hottest(2) == ["new", "newer"]
    assert tracker.rate("old") == pytest.approx(100 / 1024, rel=0.01)


def test_hot_key_tracker_is_bounded(clock: FakeClock) -> None:
    """The tracker keeps at most twice its capacity and retains the hottest keys."""
    tracker = HotKeyTracker(capacity=10, clock=clock)
    for _ in range(50):
        tracker.record("hot")
    for i in range(1000):
        tracker.record(f"k{i}")
    assert len(tracker) <= 20
    assert tracker.hottest(1) == ["hot"]


def test_hot_key_tracker_survives_long_runs(clock: FakeClock) -> None:
    """Weights are rebased so counting for days never overflows."""
    tracker = HotKeyTracker(half_life_seconds=1.0, clock=clock)
    for _ in range(200):
        tracker.record("k")
        clock.advance(10)
    assert 0 < tracker.rate("k") < 2


def signals(**over: float) -> StampedeSignals:
    base = {"miss_rate": 0.05, "request_rate": 100.0, "waiters": 0, "p50": 10.0, "p99": 50.0}
    base.update(over)
    return StampedeSignals(**base)  # type: ignore[arg-type]


def test_two_of_four_indicators_trigger_emergency(events: EventLog) -> None:
    """One indicator is not enough; two of the seed's four switch emergency mode on."""
    detector = StampedeDetector(events=events)
    assert not detector.observe(signals())
    assert not detector.observe(signals(miss_rate=0.5))
    assert detector.observe(signals(miss_rate=0.5, waiters=150))
    assert detector.risk() == 0.5
    assert events.all()[0].defense == "stampede_protection"


def test_each_indicator_fires_on_its_seed_threshold() -> None:
    """Miss rate > 0.2, rate > 5x baseline, waiters > 100, p99 > 10x p50."""
    detector = StampedeDetector()
    detector.observe(signals())  # baseline 100 req/s
    fired = detector.indicators(signals(miss_rate=0.21, request_rate=501, waiters=101, p99=101.0))
    assert fired == ("miss_rate", "request_rate", "waiters", "latency")
    assert detector.indicators(signals(miss_rate=0.2, request_rate=500, waiters=100, p99=100)) == ()


def test_emergency_clears_after_calm_checks(events: EventLog) -> None:
    """Emergency mode ends only after clear_after calm checks."""
    detector = StampedeDetector(clear_after=2, events=events)
    detector.observe(signals(miss_rate=0.5, waiters=150))
    assert detector.observe(signals())
    assert not detector.observe(signals())
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]


def test_disabled_detector_never_enters_emergency() -> None:
    """With enabled=False the indicators are still computed but no mode switch happens."""
    detector = StampedeDetector(enabled=False)
    assert not detector.observe(signals(miss_rate=0.9, waiters=999))
    assert detector.risk() == 0.5
