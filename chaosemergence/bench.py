"""Benchmark the defenses side by side with pybreaker, purgatory and uhashring and print ratios.

Run with ``make bench`` (``python -m chaosemergence.bench``). Everything is measured
in one process, one run, best of several repeats, so the ratios compare like with
like on whatever machine runs them. These are benchmarks, not tests: nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chaosemergence.defenses import (
    CircuitBreaker,
    HashRing,
    LoadShedder,
    SingleFlight,
)

__all__ = ["Result", "main", "run"]


@dataclass(frozen=True, slots=True)
class Result:
    """One measured line of the report."""

    section: str
    name: str
    value: float
    unit: str
    note: str = ""


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


async def breaker_overhead(n: int, repeat: int) -> list[Result]:
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

    ours_us = max(0.0, best["ours"] - best["base_async"]) / n * 1e6
    results = [Result("breaker", "chaosemergence", ours_us, "us/call", "asyncio, CLOSED")]
    if pb is not None:
        pb_us = max(0.0, best["pybreaker"] - best["base_sync"]) / n * 1e6
        version = getattr(pybreaker, "__version__", "")
        note = f"{version} sync call (its async API needs tornado)".strip()
        results.append(Result("breaker", "pybreaker", pb_us, "us/call", note))
        results.append(
            Result("breaker", "ours / pybreaker", ours_us / pb_us, "ratio", "goal <= 0.5")
        )
    else:
        results.append(Result("breaker", "pybreaker", float("nan"), "us/call", "not installed"))
    if decorated is not None:
        pg_us = max(0.0, best["purgatory"] - best["base_pg"]) / pg_n * 1e6
        results.append(Result("breaker", "purgatory", pg_us, "us/call", "async decorator"))
        results.append(Result("breaker", "ours / purgatory", ours_us / pg_us, "ratio"))
    else:
        results.append(Result("breaker", "purgatory", float("nan"), "us/call", "not installed"))
    return results


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


async def breaker_concurrency(levels: Sequence[int], total: int, latency: float) -> list[Result]:
    """Calls per second through a breaker around a dependency taking ``latency`` seconds."""
    results: list[Result] = []
    have_pybreaker = _optional("pybreaker") is not None
    for c in levels:
        bare = await _ours_throughput(c, total, latency, guard=False)
        ours = await _ours_throughput(c, total, latency, guard=True)
        results.append(
            Result(
                "concurrency",
                f"chaosemergence c={c}",
                ours,
                "calls/s",
                f"{ours / bare:.2f} of unguarded asyncio",
            )
        )
        if have_pybreaker:
            pb = _pybreaker_throughput(c, total, latency)
            results.append(
                Result(
                    "concurrency",
                    f"pybreaker c={c} threads",
                    pb,
                    "calls/s",
                    f"ours/pybreaker {ours / pb:.1f}x",
                )
            )
    return results


# -- singleflight --------------------------------------------------------------------


async def singleflight_cost(waiters: int, repeat: int) -> list[Result]:
    """Per-waiter cost of coalescing ``waiters`` concurrent callers onto one computation."""

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
        assert computations == 1, computations
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
    per = sf_t / waiters * 1e6
    base = plain_t / waiters * 1e6
    return [
        Result("singleflight", f"{waiters} waiters, 1 computation", per, "us/waiter"),
        Result("singleflight", "bare task awaiting a shared future", base, "us/waiter"),
        Result("singleflight", "singleflight / bare", per / base, "ratio"),
    ]


# -- shedding ------------------------------------------------------------------------


def shedding_cost(n: int, repeat: int) -> list[Result]:
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

    per = _best(decide, repeat) / n * 1e6
    base = _best(draw, repeat) / n * 1e6
    return [
        Result("shedding", "LoadShedder.admit", per, "us/decision", "red level, mixed priorities"),
        Result("shedding", "bare rng draw", base, "us/decision"),
        Result("shedding", "admit / rng draw", per / base, "ratio"),
    ]


# -- hash ring -----------------------------------------------------------------------


def _spread(counts: Counter[str], n: int, nodes: int) -> float:
    expected = n / nodes
    return max(abs(c - expected) / expected for c in counts.values())


def hashring_cost(n: int, repeat: int) -> list[Result]:
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

    ours_us = _best(ours_lookup, repeat) / n * 1e6
    ours_spread = _spread(Counter(ours.node_for(k) for k in keys), n, len(nodes))
    results = [
        Result(
            "hashring",
            "chaosemergence",
            ours_us,
            "us/lookup",
            f"{ours.vnodes} vnodes, worst node {ours_spread:+.1%} off even",
        ),
    ]
    uhashring = _optional("uhashring")
    if uhashring is None:
        results.append(Result("hashring", "uhashring", float("nan"), "us/lookup", "not installed"))
        return results
    theirs = uhashring.HashRing(nodes)

    def theirs_lookup() -> float:
        lookup = theirs.get_node
        start = time.perf_counter()
        for k in keys:
            lookup(k)
        return time.perf_counter() - start

    theirs_us = _best(theirs_lookup, repeat) / n * 1e6
    theirs_spread = _spread(Counter(theirs.get_node(k) for k in keys), n, len(nodes))
    results.append(
        Result(
            "hashring",
            "uhashring",
            theirs_us,
            "us/lookup",
            f"default vnodes, worst node {theirs_spread:+.1%} off even",
        )
    )
    results.append(Result("hashring", "ours / uhashring", ours_us / theirs_us, "ratio"))
    return results


# -- driver --------------------------------------------------------------------------


async def run(quick: bool = False) -> list[Result]:
    """Run every benchmark and return the results (``quick`` shrinks the workloads)."""
    scale = 5 if quick else 1
    repeat = 3 if quick else 5
    results: list[Result] = []
    results += await breaker_overhead(100_000 // scale, repeat)
    results += await breaker_concurrency((1, 4, 16, 64), 512 // scale, 0.001)
    results += await singleflight_cost(10_000 // scale, repeat)
    results += shedding_cost(100_000 // scale, repeat)
    results += hashring_cost(100_000 // scale, repeat)
    return results


def _format(results: Sequence[Result]) -> str:
    lines: list[str] = []
    section = ""
    for r in results:
        if r.section != section:
            section = r.section
            lines.append(f"\n[{section}]")
        value = "n/a" if r.value != r.value else f"{r.value:,.3f}"
        lines.append(f"  {r.name:<40} {value:>14} {r.unit:<12} {r.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks and print a side-by-side report."""
    parser = argparse.ArgumentParser(prog="python -m chaosemergence.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke run)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    results = asyncio.run(run(quick=args.quick))
    print(f"chaosemergence defense benchmarks (python {sys.version.split()[0]})")
    print(_format(results))
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
