"""Guard: breaker -> throttle -> retry with budget -> the call, with a fallback (issue 11).

Real layers on an injected clock and sleep; call counts show which layer acted and in what
order.
"""

from __future__ import annotations

import random

import pytest

from chaosemergence.defenses import (
    AdaptiveThrottle,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    ExponentialBackoff,
    Guard,
    LoadShedError,
    RetryBudget,
    RetryPolicy,
)

from .conftest import FakeClock


class Boom(Exception):
    """The dependency's error."""


class AlwaysDraw(random.Random):
    """An rng whose every draw is 0: the throttle rejects whenever its probability is > 0."""

    def random(self) -> float:
        return 0.0


class Dependency:
    """Fails its first ``failures`` calls, then answers; counts every call."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.args: list[tuple[object, ...]] = []

    async def __call__(self, *args: object) -> str:
        self.calls += 1
        self.args.append(args)
        if self.calls <= self.failures:
            raise Boom(f"call {self.calls}")
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def layers(
    clock: FakeClock, *, attempts: int = 3, budget: RetryBudget | None = None
) -> tuple[CircuitBreaker, AdaptiveThrottle, RetryPolicy, Sleeps]:
    sleeps = Sleeps()
    breaker = CircuitBreaker("dep", BreakerConfig(failure_threshold=5), clock=clock)
    throttle = AdaptiveThrottle(rejected_on=(Boom,), clock=clock, rng=AlwaysDraw())
    retry = RetryPolicy(
        max_attempts=attempts,
        backoff=ExponentialBackoff(base=0.1, cap=1.0),
        budget=budget,
        retry_on=(Boom,),
        sleep=sleeps,
    )
    return breaker, throttle, retry, sleeps


async def fallback_value(error: BaseException) -> str:
    return f"fallback:{type(error).__name__}"


async def test_call_passes_arguments_and_retries_inside(clock: FakeClock) -> None:
    """Two failures then success: three calls of the dependency, one call to each outer layer."""
    breaker, throttle, retry, sleeps = layers(clock)
    guard = Guard(breaker=breaker, throttle=throttle, retry=retry)
    dependency = Dependency(failures=2)
    assert await guard.call(dependency, "user-1", 7) == "ok"
    assert dependency.calls == 3 and dependency.args == [("user-1", 7)] * 3
    assert sleeps.delays == [0.1, 0.2]  # the retry policy's backoff, between the attempts
    assert retry.attempts == 3 and retry.retries == 2
    # Breaker and throttle see one logical call: they sit outside the retries.
    assert breaker.calls == 1 and breaker.failures == 0
    assert throttle.snapshot()["requests"] == 1


async def test_exhausted_retries_are_one_failure_to_the_breaker(clock: FakeClock) -> None:
    """Retries exhausted: the breaker counts one failure and serves the fallback with it."""
    breaker, throttle, retry, _ = layers(clock)
    guard = Guard(breaker=breaker, throttle=throttle, retry=retry, fallback=fallback_value)
    dependency = Dependency(failures=10)
    assert await guard.call(dependency) == "fallback:Boom"
    assert dependency.calls == 3
    assert breaker.failures == 1 and guard.fallbacks == 1


async def test_open_breaker_rejects_before_throttle_and_call(clock: FakeClock) -> None:
    """Five failed calls open the breaker; the sixth touches neither throttle nor dependency."""
    breaker, _, retry, _ = layers(clock, attempts=1)
    throttle = AdaptiveThrottle(rejected_on=(Boom,), clock=clock, rng=random.Random(1))
    throttle.enabled = False  # counted but never rejecting, to isolate the breaker
    guard = Guard(breaker=breaker, throttle=throttle, retry=retry)
    dependency = Dependency(failures=100)
    for _ in range(5):
        with pytest.raises(Boom):
            await guard.call(dependency)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        await guard.call(dependency)
    assert dependency.calls == 5 and retry.attempts == 5
    assert await guard.run(dependency, fallback=fallback_value) == "fallback:CircuitOpenError"
    assert dependency.calls == 5 and guard.calls == 7


async def test_throttle_rejects_before_the_retries(clock: FakeClock) -> None:
    """Once the backend refuses, the throttle rejects locally: no attempt, breaker failure."""
    breaker = CircuitBreaker("dep", BreakerConfig(failure_threshold=0), clock=clock)
    _, throttle, retry, _ = layers(clock, attempts=1)
    throttled: list[LoadShedError] = []
    guard = Guard(
        breaker=breaker,
        throttle=throttle,
        retry=retry,
        fallback=fallback_value,
        on_throttled=throttled.append,
    )
    dependency = Dependency(failures=100)
    assert await guard.call(dependency) == "fallback:Boom"  # the backend refused once
    assert await guard.call(dependency) == "fallback:LoadShedError"  # p = 1/2, draw 0
    assert dependency.calls == 1 and retry.attempts == 1  # the retries sit inside the throttle
    assert guard.throttled == 1 and len(throttled) == 1
    assert breaker.failures == 2  # a local rejection is a failure to the breaker


async def test_budget_stops_retries(clock: FakeClock) -> None:
    """With an empty retry budget, a failure is not retried."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    _, _, retry, sleeps = layers(clock, budget=budget)
    guard = Guard(retry=retry)
    dependency = Dependency(failures=1)
    with pytest.raises(Boom):
        await guard.call(dependency)
    assert dependency.calls == 1 and retry.budget_refusals == 1 and sleeps.delays == []


async def test_without_breaker_failures_fall_back(clock: FakeClock) -> None:
    """No breaker: the fallback answers a failed call directly."""
    _, _, retry, _ = layers(clock, attempts=2)
    seen: list[BaseException] = []
    guard = Guard(retry=retry, fallback=fallback_value, on_fallback=seen.append)
    dependency = Dependency(failures=5)
    assert await guard.call(dependency) == "fallback:Boom"
    assert dependency.calls == 2 and guard.fallbacks == 1 and isinstance(seen[0], Boom)


async def test_breaker_switched_off_is_the_naive_client(clock: FakeClock) -> None:
    """Breaker off: failures propagate despite the fallback; throttle refusals still fall back."""
    breaker, throttle, retry, _ = layers(clock, attempts=1)
    breaker.enabled = False
    guard = Guard(breaker=breaker, throttle=throttle, retry=retry, fallback=fallback_value)
    dependency = Dependency(failures=100)
    with pytest.raises(Boom):
        await guard.call(dependency)
    assert await guard.call(dependency) == "fallback:LoadShedError"
    assert dependency.calls == 1 and breaker.calls == 0 and guard.fallbacks == 1


async def test_without_fallback_refusals_raise(clock: FakeClock) -> None:
    """No fallback: the throttle's refusal reaches the caller."""
    _, throttle, retry, _ = layers(clock, attempts=1)
    guard = Guard(throttle=throttle, retry=retry)
    dependency = Dependency(failures=100)
    with pytest.raises(Boom):
        await guard.call(dependency)
    with pytest.raises(LoadShedError):
        await guard.call(dependency)


async def test_decorator(clock: FakeClock) -> None:
    """`@guard` wraps a coroutine function: arguments pass, each call goes through the guard."""
    breaker, throttle, retry, _ = layers(clock)
    guard = Guard(breaker=breaker, throttle=throttle, retry=retry, fallback=fallback_value)
    calls: list[tuple[str, int]] = []

    @guard
    async def fetch(user: str, *, times: int) -> str:
        """Fetch a user."""
        calls.append((user, times))
        if len(calls) < 2:
            raise Boom("first")
        return f"{user}x{times}"

    assert await fetch("ada", times=2) == "adax2"
    assert calls == [("ada", 2), ("ada", 2)]
    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch a user."
    assert guard.calls == 1 and retry.retries == 1 and breaker.calls == 1


def test_arguments_are_keyword_only() -> None:
    """`Guard(breaker)` is refused: every layer is named."""
    with pytest.raises(TypeError):
        Guard(CircuitBreaker("x"))  # type: ignore[misc]


def test_snapshot_names_the_layers(clock: FakeClock) -> None:
    breaker, throttle, retry, _ = layers(clock)
    snap = Guard(name="db", breaker=breaker, throttle=throttle, retry=retry).snapshot()
    assert snap["name"] == "db" and snap["calls"] == 0
    assert snap["breaker"] is not None and snap["throttle"] is not None and snap["retry"]
