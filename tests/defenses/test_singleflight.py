"""Tests for request coalescing (singleflight)."""

from __future__ import annotations

import asyncio

import pytest

from chaosemergence.defenses import SingleFlight

N = 10_000


class Broken(Exception):
    """The shared computation failed."""


async def wait_for_waiters(sf: SingleFlight, key: str, n: int) -> None:
    while sf.waiters(key) < n:
        await asyncio.sleep(0)


async def test_ten_thousand_callers_share_one_computation() -> None:
    """10,000 concurrent callers of one cold key run the computation exactly once."""
    sf = SingleFlight()
    gate = asyncio.Event()
    computations = 0

    async def compute() -> str:
        nonlocal computations
        computations += 1
        await gate.wait()
        return "value"

    tasks = [asyncio.create_task(sf.do("k", compute)) for _ in range(N)]
    await wait_for_waiters(sf, "k", N)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert computations == 1
    assert results == ["value"] * N
    assert sf.snapshot()["coalesced"] == N - 1
    assert sf.waiters("k") == 0


async def test_error_reaches_all_ten_thousand_waiters() -> None:
    """An error in the shared computation is raised to every one of 10,000 callers."""
    sf = SingleFlight()
    gate = asyncio.Event()
    computations = 0

    async def compute() -> str:
        nonlocal computations
        computations += 1
        await gate.wait()
        raise Broken("db down")

    tasks = [asyncio.create_task(sf.do("k", compute)) for _ in range(N)]
    await wait_for_waiters(sf, "k", N)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert computations == 1
    assert all(isinstance(r, Broken) for r in results)
    assert len(results) == N


async def test_waiter_timeout_leaves_computation_running() -> None:
    """A waiter that times out gets TimeoutError; the others still get the shared result."""
    sf = SingleFlight()
    gate = asyncio.Event()
    computations = 0

    async def compute() -> int:
        nonlocal computations
        computations += 1
        await gate.wait()
        return 42

    patient = asyncio.create_task(sf.do("k", compute))
    await wait_for_waiters(sf, "k", 1)
    with pytest.raises(TimeoutError):
        await sf.do("k", compute, timeout=0.0)
    assert sf.waiters("k") == 1
    gate.set()
    assert await patient == 42
    assert computations == 1
    assert sf.timeouts == 1


async def test_cancelled_waiter_does_not_cancel_others() -> None:
    """Cancelling the first caller does not cancel the computation for later callers."""
    sf = SingleFlight()
    gate = asyncio.Event()

    async def compute() -> int:
        await gate.wait()
        return 7

    first = asyncio.create_task(sf.do("k", compute))
    second = asyncio.create_task(sf.do("k", compute))
    await wait_for_waiters(sf, "k", 2)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == 7


async def test_forget_starts_a_fresh_computation() -> None:
    """After forget(key) the next caller computes anew; earlier waiters keep the old result."""
    sf = SingleFlight()
    gates = [asyncio.Event(), asyncio.Event()]
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        mine = calls
        await gates[mine - 1].wait()
        return mine

    old = asyncio.create_task(sf.do("k", compute))
    await wait_for_waiters(sf, "k", 1)
    sf.forget("k")
    new = asyncio.create_task(sf.do("k", compute))
    await wait_for_waiters(sf, "k", 1)
    for gate in gates:
        gate.set()
    assert (await old, await new) == (1, 2)


async def test_keys_are_independent_and_results_not_cached() -> None:
    """Different keys compute separately, and a finished key computes again next time."""
    sf = SingleFlight()
    calls: list[str] = []

    def make(key: str):  # type: ignore[no-untyped-def]
        async def compute() -> str:
            calls.append(key)
            return key

        return compute

    assert await asyncio.gather(sf.do("a", make("a")), sf.do("b", make("b"))) == ["a", "b"]
    assert await sf.do("a", make("a")) == "a"
    assert calls == ["a", "b", "a"]
    assert sf.in_flight() == 0


async def test_disabled_singleflight_computes_per_caller() -> None:
    """With enabled=False each caller runs its own computation (the naive herd)."""
    sf = SingleFlight(enabled=False)
    gate = asyncio.Event()
    computations = 0

    async def compute() -> int:
        nonlocal computations
        computations += 1
        await gate.wait()
        return 1

    tasks = [asyncio.create_task(sf.do("k", compute)) for _ in range(50)]
    while computations < 50:
        await asyncio.sleep(0)
    gate.set()
    assert sum(await asyncio.gather(*tasks)) == 50
    assert computations == 50


async def test_reset_zeroes_counters() -> None:
    """reset() clears flights and counters."""
    sf = SingleFlight()

    async def compute() -> int:
        return 1

    await sf.do("k", compute)
    sf.reset()
    assert sf.snapshot()["calls"] == 0
