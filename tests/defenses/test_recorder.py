"""The metrics recorder interface: each defense reports through it, and counts match."""

from __future__ import annotations

import asyncio
import random

import pytest

from chaosemergence.defenses import (
    AdaptiveThrottle,
    BreakerConfig,
    CircuitBreaker,
    CircuitOpenError,
    EventLog,
    ExponentialBackoff,
    LoadShedder,
    RetryBudget,
    RetryPolicy,
    SingleFlight,
)
from chaosemergence.defenses.metrics import InMemoryRecorder

from .conftest import FakeClock, run_now


class Boom(Exception):
    """The dependency failed."""


async def fail() -> str:
    raise Boom("down")


def test_in_memory_recorder_sums_over_matching_labels() -> None:
    recorder = InMemoryRecorder()
    recorder.increment("shed_requests", shedder="a", priority="low")
    recorder.increment("shed_requests", 2, shedder="a", priority="medium")
    recorder.increment("shed_requests", shedder="b", priority="low")
    recorder.observe("delay", 0.5, policy="p")
    assert recorder.count("shed_requests") == 4
    assert recorder.count("shed_requests", shedder="a") == 3
    assert recorder.count("shed_requests", priority="low") == 2
    assert recorder.count("missing") == 0
    assert recorder.observations("delay", policy="p") == [0.5]
    assert recorder.names() == {"shed_requests", "delay"}


def test_event_log_counts_every_event_even_past_its_bound() -> None:
    recorder = InMemoryRecorder()
    log = EventLog(maxlen=2, recorder=recorder)
    for _ in range(3):
        log.record("circuit_breaker", "activated", "open")
    log.record("circuit_breaker", "deactivated", "closed")
    assert len(log) == 2
    assert recorder.count("events", defense="circuit_breaker", kind="activated") == 3
    assert recorder.count("events", kind="deactivated") == 1


def test_breaker_reports_failures_transitions_and_rejections(clock: FakeClock) -> None:
    recorder = InMemoryRecorder()
    breaker = CircuitBreaker("db", BreakerConfig(), clock=clock, recorder=recorder)
    for _ in range(5):  # the seed's threshold opens it
        with pytest.raises(Boom):
            run_now(breaker.call(fail))
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            run_now(breaker.call(fail))
    assert recorder.count("breaker_failures", breaker="db") == 5 == breaker.failures
    assert recorder.count("breaker_transitions", breaker="db", to="open") == 1
    assert recorder.count("breaker_rejections", breaker="db", state="open") == 3


def test_retry_policy_reports_retries_and_budget_refusals(clock: FakeClock) -> None:
    recorder = InMemoryRecorder()
    # A budget with no floor and no requests yet: one first attempt earns 0.5 of a retry.
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, clock=clock)
    policy = RetryPolicy(
        max_attempts=3,
        backoff=ExponentialBackoff(base=0.0),
        budget=budget,
        retry_on=(Boom,),
        name="db",
        recorder=recorder,
    )
    for _ in range(4):
        with pytest.raises(Boom):
            asyncio.run(policy.run(fail))
    assert recorder.count("retries", policy="db") == policy.retries > 0
    assert recorder.count("retry_budget_refusals", policy="db") == policy.budget_refusals > 0


def test_throttle_reports_each_local_rejection(clock: FakeClock) -> None:
    recorder = InMemoryRecorder()
    throttle = AdaptiveThrottle(clock=clock, rng=random.Random(3), recorder=recorder)
    rejected = sum(1 for _ in range(300) if not throttle.allow())
    assert rejected > 200
    assert recorder.count("throttle_local_rejections", throttle=throttle.name) == rejected


def test_singleflight_reports_one_computation_and_the_shared_waiters() -> None:
    recorder = InMemoryRecorder()
    flight = SingleFlight("profiles", recorder=recorder)

    async def scenario() -> list[str]:
        gate = asyncio.Event()

        async def compute() -> str:
            await gate.wait()
            return "v"

        callers = [asyncio.create_task(flight.do("k", compute)) for _ in range(50)]
        while flight.calls < 50:
            await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*callers)

    assert asyncio.run(scenario()) == ["v"] * 50
    assert recorder.count("singleflight_computations", flight="profiles") == 1
    assert recorder.count("singleflight_shared", flight="profiles") == 49


def test_shedder_reports_shed_requests_by_priority(clock: FakeClock) -> None:
    recorder = InMemoryRecorder()
    shedder = LoadShedder(clock=clock, rng=random.Random(5), recorder=recorder)
    shedder.emergency_shed(0.5)
    admitted = [shedder.admit("low") for _ in range(400)]
    assert admitted.count(False) > 0
    assert recorder.count("shed_requests", priority="low") == admitted.count(False)
    assert recorder.count("shed_requests", priority="critical") == 0
