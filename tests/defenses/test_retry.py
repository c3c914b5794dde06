"""Tests for backoff strategies, the retry budget and the retry policy."""

from __future__ import annotations

import random
import statistics
from collections.abc import Awaitable, Callable

import pytest

from chaosemergence.defenses import (
    CircuitOpenError,
    DecorrelatedJitterBackoff,
    EventLog,
    ExponentialBackoff,
    FullJitterBackoff,
    RetryBudget,
    RetryPolicy,
)

from .conftest import FakeClock, run_now


class Flaky(Exception):
    """A retryable failure."""


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing_then_ok(failures: int) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls: list[int] = []

    async def op() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise Flaky(f"attempt {len(calls)}")
        return "ok"

    return calls, op


def test_exponential_backoff_doubles_and_caps() -> None:
    """Delays double from base and stop at the cap."""
    b = ExponentialBackoff(base=0.1, cap=0.5)
    assert [b.delay(a) for a in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert b.delay(10_000) == 0.5


def test_full_jitter_is_uniform_below_the_ceiling() -> None:
    """Full jitter draws from [0, ceiling] with mean about half the ceiling."""
    b = FullJitterBackoff(base=0.1, cap=10.0, rng=random.Random(1))
    samples = [b.delay(3) for _ in range(5000)]
    assert all(0.0 <= s <= 0.4 for s in samples)
    assert statistics.fmean(samples) == pytest.approx(0.2, rel=0.05)


def test_decorrelated_jitter_stays_between_base_and_cap() -> None:
    """Decorrelated jitter never goes below base or above cap and restarts at attempt 1."""
    b = DecorrelatedJitterBackoff(base=0.1, cap=2.0, rng=random.Random(2))
    for _ in range(200):
        delays = [b.delay(a) for a in range(1, 10)]
        assert all(0.1 <= d <= 2.0 for d in delays)
        assert delays[0] <= 0.3
    assert max(delays) > 0.3


def test_policy_retries_with_backoff_and_reports_attempts() -> None:
    """A failing call is retried after backoff sleeps, and on_attempt sees 1, 2, 3."""
    sleeps = Sleeps()
    attempts: list[int] = []
    policy = RetryPolicy(
        max_attempts=3,
        backoff=ExponentialBackoff(0.1, 1.0),
        sleep=sleeps,
        on_attempt=attempts.append,
    )
    calls, op = failing_then_ok(2)
    assert run_now(policy.run(op)) == "ok"
    assert len(calls) == 3
    assert attempts == [1, 2, 3]
    assert sleeps.delays == pytest.approx([0.1, 0.2])


def test_policy_gives_up_after_max_attempts() -> None:
    """After max_attempts the last error propagates."""
    policy = RetryPolicy(max_attempts=3, sleep=Sleeps())
    calls, op = failing_then_ok(10)
    with pytest.raises(Flaky, match="attempt 3"):
        run_now(policy.run(op))
    assert len(calls) == 3


def test_policy_does_not_retry_other_errors_or_open_breakers() -> None:
    """Errors outside retry_on and CircuitOpenError are raised at once."""
    policy = RetryPolicy(max_attempts=5, retry_on=(Flaky,), sleep=Sleeps())
    calls: list[int] = []

    async def wrong() -> str:
        calls.append(1)
        raise KeyError("x")

    async def open_breaker() -> str:
        calls.append(1)
        raise CircuitOpenError("db", "open", 5.0)

    with pytest.raises(KeyError):
        run_now(policy.run(wrong))
    with pytest.raises(CircuitOpenError):
        run_now(RetryPolicy(max_attempts=5, sleep=Sleeps()).run(open_breaker))
    assert len(calls) == 2


def test_budget_allows_ratio_of_requests(clock: FakeClock) -> None:
    """With ratio 0.1 and no floor, 100 requests earn exactly 10 retries."""
    budget = RetryBudget(ratio=0.1, min_retries_per_second=0.0, clock=clock)
    for _ in range(100):
        budget.record_request()
    allowed = sum(budget.can_retry() for _ in range(50))
    assert allowed == 10
    assert budget.refused == 40


def test_budget_floor_allows_a_few_retries_without_traffic(clock: FakeClock) -> None:
    """min_retries_per_second over the window allows a few retries with no requests."""
    budget = RetryBudget(ratio=0.1, min_retries_per_second=1.0, window_seconds=10.0, clock=clock)
    assert sum(budget.can_retry() for _ in range(30)) == 10


def test_budget_deposits_expire(clock: FakeClock) -> None:
    """Requests older than the window no longer earn retries."""
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window_seconds=10.0, clock=clock)
    for _ in range(20):
        budget.record_request()
    clock.advance(11)
    assert not budget.can_retry()


def test_budget_events_are_throttled(clock: FakeClock, events: EventLog) -> None:
    """One 'activated' when refusals start and one 'deactivated' when retries resume."""
    budget = RetryBudget(ratio=0.1, min_retries_per_second=0.0, clock=clock, events=events)
    for _ in range(10):
        budget.record_request()
    assert budget.can_retry()
    for _ in range(5):
        assert not budget.can_retry()
    for _ in range(10):
        budget.record_request()
    clock.advance(1.0)  # a quiet second: the episode may end
    assert budget.can_retry()
    log = events.all()
    assert [(e.defense, e.kind) for e in log] == [
        ("retry_budget", "activated"),
        ("retry_budget", "deactivated"),
    ]


def test_a_budget_at_its_edge_records_one_episode_not_one_per_decision(
    clock: FakeClock, events: EventLog
) -> None:
    """At the edge, each request earns one retry that the next refusal follows: 100 such
    alternations within a second are one episode, which ends after a quiet second."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock, events=events)
    for _ in range(100):
        budget.record_request()
        assert budget.can_retry()
        assert not budget.can_retry()
        clock.advance(0.005)
    assert [e.kind for e in events.all()] == ["activated"]
    assert budget.refusing
    clock.advance(1.0)
    budget.record_request()
    assert budget.can_retry()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]
    assert not budget.refusing


def test_policy_stops_when_budget_refuses(clock: FakeClock) -> None:
    """When the budget is spent the policy raises the error instead of retrying."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    policy = RetryPolicy(max_attempts=5, budget=budget, sleep=Sleeps())
    calls, op = failing_then_ok(10)
    with pytest.raises(Flaky, match="attempt 1"):
        run_now(policy.run(op))
    assert len(calls) == 1
    assert policy.budget_refusals == 1


def test_disabled_policy_retries_naively(clock: FakeClock) -> None:
    """With enabled=False it retries immediately and ignores the budget (negative control)."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=4, budget=budget, sleep=sleeps, enabled=False)
    calls, op = failing_then_ok(3)
    assert run_now(policy.run(op)) == "ok"
    assert len(calls) == 4
    assert sleeps.delays == []


def test_snapshots_and_reset(clock: FakeClock) -> None:
    """snapshot() reports counters and reset() zeroes them."""
    budget = RetryBudget(clock=clock)
    policy = RetryPolicy(budget=budget, sleep=Sleeps())
    _, op = failing_then_ok(1)
    run_now(policy.run(op))
    assert policy.snapshot()["retries"] == 1
    policy.reset()
    assert policy.snapshot()["retries"] == 0
    assert budget.snapshot()["window_requests"] == 0


def test_invalid_arguments_are_rejected() -> None:
    """Impossible settings raise ValueError."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=2.0)
    with pytest.raises(ValueError, match="base"):
        ExponentialBackoff(base=2.0, cap=1.0)
