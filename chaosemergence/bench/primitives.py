"""The defense primitives side by side with pybreaker, purgatory and uhashring.

Everything is measured in one process, one run, best of several repeats, so the ratios
compare like with like on whatever machine runs them. These are benchmarks, not tests:
nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from chaosemergence.bench.record import Record
from chaosemergence.defenses import (
    AdaptiveThrottle,
    CircuitBreaker,
    Guard,
    HashRing,
    LoadShedder,
    RetryBudget,
    RetryPolicy,
    SingleFlight,
)

__all__ = ["primitives_section"]


def _optional(module: str) -> Any:
    """Import an optional competitor, or return None when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _best(fn: Callable[[], float], repeat: int) -> float:
    """Return the smallest of ``repeat`` measurements (the least disturbed one)."""
    return min(fn() for _ in range(repeat))


async def _abest(fn: Callable[[], Awaitable[float]], repeat: int) -> float:
    results = [await fn() for _ in range(repeat)]
    return min(results)


# -- breaker per-call overhead --------------------------------------------------------


async def _noop() -> int:
    return 1


def _sync_noop() -> int:
    return 1


async def _async_loop(call: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - start


def _sync_loop(call: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - start


async def breaker_overhead(record: Record, n: int, repeat: int) -> None:
    """Measure what a successful call through each breaker costs on top of the bare call.

    The contenders are measured in turns within each repeat (not one after the other),
    so a burst of load from other processes hits them alike; the best repeat counts.
    """
    pybreaker = _optional("pybreaker")
    purgatory = _optional("purgatory")
    ours = CircuitBreaker("bench")
    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=10) if pybreaker else None
    decorated: Callable[[], Awaitable[int]] | None = None
    if purgatory is not None:
        factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=10)
        decorated = factory("bench")(_noop)
        await decorated()  # create the circuit outside the timing
    pg_n = max(1000, n // 10)
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for _ in range(repeat):
        keep("base_async", await _async_loop(_noop, n))
        keep("ours", await _async_loop(lambda: ours.call(_noop), n))
        if pb is not None:
            keep("base_sync", _sync_loop(_sync_noop, n))
            keep("pybreaker", _sync_loop(lambda: pb.call(_sync_noop), n))
        if decorated is not None:
            keep("base_pg", await _async_loop(_noop, pg_n))
            keep("purgatory", await _async_loop(decorated, pg_n))

    section = "primitives"
    ours_us = max(0.0, best["ours"] - best["base_async"]) / n * 1e6
    pb_us = max(0.0, best["pybreaker"] - best["base_sync"]) / n * 1e6 if pb is not None else None
    pg_us = (
        max(0.0, best["purgatory"] - best["base_pg"]) / pg_n * 1e6
        if decorated is not None
        else None
    )
    # pybreaker's sync call (its async API needs tornado); purgatory's async decorator.
    record.add(section, "pybreaker_us_per_call", pb_us, "us/call")
    record.add(section, "purgatory_us_per_call", pg_us, "us/call")
    record.add(
        section,
        "breaker_us_per_call",
        ours_us,
        "us/call",
        anchor=f"{section}/pybreaker_us_per_call",
        goal="ratio <= 0.5",
    )
    record.add(
        section,
        "breaker_us_per_call_vs_purgatory",
        ours_us,
        "us/call",
        anchor=f"{section}/purgatory_us_per_call",
    )


# -- breaker throughput vs concurrency ----------------------------------------------


async def _ours_throughput(concurrency: int, total: int, latency: float, guard: bool) -> float:
    breaker = CircuitBreaker("throughput")
    per_task = max(1, total // concurrency)

    async def dependency() -> None:
        await asyncio.sleep(latency)

    async def worker() -> None:
        for _ in range(per_task):
            if guard:
                await breaker.call(dependency)
            else:
                await dependency()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - start)


def _pybreaker_throughput(concurrency: int, total: int, latency: float) -> float:
    breaker = _optional("pybreaker").CircuitBreaker(fail_max=5, reset_timeout=10)
    per_thread = max(1, total // concurrency)

    def worker() -> None:
        for _ in range(per_thread):
            breaker.call(time.sleep, latency)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_thread * concurrency / (time.perf_counter() - start)


async def breaker_concurrency(
    record: Record, levels: Sequence[int], total: int, latency: float
) -> None:
    """Calls per second through a breaker around a dependency taking ``latency`` seconds."""
    section = "breaker_concurrency"
    have_pybreaker = _optional("pybreaker") is not None
    for c in levels:
        bare = await _ours_throughput(c, total, latency, guard=False)
        ours = await _ours_throughput(c, total, latency, guard=True)
        pb = _pybreaker_throughput(c, total, latency) if have_pybreaker else None
        record.add(section, f"unguarded_c{c}", bare, "calls/s")
        record.add(section, f"pybreaker_threads_c{c}", pb, "calls/s")
        record.add(section, f"breaker_c{c}", ours, "calls/s", anchor=f"{section}/unguarded_c{c}")
        record.add(
            section,
            f"breaker_vs_pybreaker_c{c}",
            ours,
            "calls/s",
            anchor=f"{section}/pybreaker_threads_c{c}",
        )


# -- guarded call: breaker + throttle + retry + budget ---------------------------------


async def guarded_overhead(record: Record, n: int, repeat: int) -> None:
    """What a successful call through the four defenses costs on top of the bare call."""
    # The library's Guard, as a service (and the reference system's cells) compose it:
    # breaker -> adaptive throttle -> retries under a retry budget -> the call.
    guard = Guard(
        name="bench-guarded",
        breaker=CircuitBreaker("bench-guarded"),
        throttle=AdaptiveThrottle(),
        retry=RetryPolicy(max_attempts=3, budget=RetryBudget()),
    )
    best_bare = best_guarded = float("inf")
    for _ in range(repeat):
        best_bare = min(best_bare, await _async_loop(_noop, n))
        best_guarded = min(best_guarded, await _async_loop(lambda: guard.run(_noop), n))
    section = "primitives"
    record.add(section, "bare_call_us", best_bare / n * 1e6, "us/call")
    # breaker + throttle + retry + budget around the same trivial async call.
    record.add(
        section,
        "guarded_call_us",
        best_guarded / n * 1e6,
        "us/call",
        anchor=f"{section}/bare_call_us",
    )
    record.add(
        section,
        "guarded_overhead_us_per_call",
        max(0.0, best_guarded - best_bare) / n * 1e6,
        "us/call",
    )


# -- singleflight --------------------------------------------------------------------


async def singleflight_cost(record: Record, waiters: int, repeat: int) -> None:
    """Per-waiter cost of coalescing ``waiters`` concurrent callers onto one computation."""

    computed: list[int] = []

    async def coalesced() -> float:
        sf = SingleFlight()
        gate = asyncio.Event()
        computations = 0

        async def compute() -> int:
            nonlocal computations
            computations += 1
            await gate.wait()
            return 1

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(sf.do("hot", compute)) for _ in range(waiters)]
        while sf.waiters("hot") < waiters:
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        computed.append(computations)
        return elapsed

    async def plain() -> float:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()

        async def wait() -> int:
            return await asyncio.shield(future)

        start = time.perf_counter()
        tasks = [asyncio.ensure_future(wait()) for _ in range(waiters)]
        await asyncio.sleep(0)
        future.set_result(1)
        await asyncio.gather(*tasks)
        return time.perf_counter() - start

    sf_t = await _abest(coalesced, repeat)
    plain_t = await _abest(plain, repeat)
    section = "primitives"
    record.add(section, "shared_future_us_per_waiter", plain_t / waiters * 1e6, "us/waiter")
    record.add(
        section,
        "singleflight_us_per_waiter",
        sf_t / waiters * 1e6,
        "us/waiter",
        anchor=f"{section}/shared_future_us_per_waiter",
    )
    # Computations for one hot key with `waiters` concurrent callers (the worst repeat).
    record.add(
        section,
        "singleflight_computations",
        float(max(computed)),
        "computations",
        goal="value <= 1",
    )


# -- shedding ------------------------------------------------------------------------


def shedding_cost(record: Record, n: int, repeat: int) -> None:
    """Cost of one admit/shed decision at the red level with a mixed priority stream."""
    shedder = LoadShedder(rng=random.Random(1))
    shedder.update(0.8)
    rng = random.Random(2)
    stream = [rng.choice(("high", "medium", "low")) for _ in range(n)]
    features = [rng.choice(("search", "feed", "payments")) for _ in range(n)]

    def decide() -> float:
        admit = shedder.admit
        start = time.perf_counter()
        for priority, feature in zip(stream, features, strict=True):
            admit(priority, feature)
        return time.perf_counter() - start

    def draw() -> float:
        r = random.Random(3).random
        start = time.perf_counter()
        for _ in stream:
            _ = r() < 0.3
        return time.perf_counter() - start

    section = "primitives"
    record.add(section, "rng_draw_us", _best(draw, repeat) / n * 1e6, "us/decision")
    # Red level, mixed priorities.
    record.add(
        section,
        "shedder_admit_us",
        _best(decide, repeat) / n * 1e6,
        "us/decision",
        anchor=f"{section}/rng_draw_us",
    )


# -- hash ring -----------------------------------------------------------------------


def _spread(counts: Counter[str], n: int, nodes: int) -> float:
    expected = n / nodes
    return max(abs(c - expected) / expected for c in counts.values())


def hashring_cost(record: Record, n: int, repeat: int) -> None:
    """Lookup cost and balance of our ring against uhashring, 10 nodes."""
    nodes = [f"cell-{i}" for i in range(10)]
    keys = [f"user-{i}" for i in range(n)]
    ours = HashRing(nodes)

    def ours_lookup() -> float:
        lookup = ours.node_for
        start = time.perf_counter()
        for k in keys:
            lookup(k)
        return time.perf_counter() - start

    section = "primitives"
    ours_us = _best(ours_lookup, repeat) / n * 1e6
    ours_spread = _spread(Counter(ours.node_for(k) for k in keys), n, len(nodes))
    uhashring = _optional("uhashring")
    theirs_us: float | None = None
    theirs_spread: float | None = None
    if uhashring is not None:
        theirs = uhashring.HashRing(nodes)

        def theirs_lookup() -> float:
            lookup = theirs.get_node
            start = time.perf_counter()
            for k in keys:
                lookup(k)
            return time.perf_counter() - start

        theirs_us = _best(theirs_lookup, repeat) / n * 1e6
        theirs_spread = _spread(Counter(theirs.get_node(k) for k in keys), n, len(nodes))
    # 10 nodes; spread: the worst node's share off an even split (0.05 = 5% off).
    record.add(section, "uhashring_us_per_lookup", theirs_us, "us/lookup")
    record.add(
        section,
        "hashring_us_per_lookup",
        ours_us,
        "us/lookup",
        anchor=f"{section}/uhashring_us_per_lookup",
    )
    record.add(section, "uhashring_spread", theirs_spread, "fraction")
    record.add(
        section,
        "hashring_spread",
        ours_spread,
        "fraction",
        anchor=f"{section}/uhashring_spread",
    )


async def primitives_section(record: Record, quick: bool = False) -> None:
    """Run every primitive benchmark into ``record`` (``quick`` shrinks the workloads)."""
    scale = 5 if quick else 1
    repeat = 3 if quick else 5
    await breaker_overhead(record, 100_000 // scale, repeat)
    await guarded_overhead(record, 100_000 // scale, repeat)
    await breaker_concurrency(record, (1, 4, 16, 64), 512 // scale, 0.001)
    await singleflight_cost(record, 10_000 // scale, repeat)
    shedding_cost(record, 100_000 // scale, repeat)
    hashring_cost(record, 100_000 // scale, repeat)
