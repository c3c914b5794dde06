"""The thundering herd inside one cell: concurrent misses, the database queue, coalescing.

A real CellService with its real simulated database (short service times, a tight spread):
concurrency comes from starting every request before any database call can answer, and the
tests count computations and calls instead of sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chaosemergence.app.cell_service import CellService
from chaosemergence.app.profile_cache import PREWARM_CONCURRENCY, PREWARM_KEYS
from chaosemergence.app.settings import DependencySettings, SystemSettings

Make = Callable[..., Awaitable[CellService]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """A cell whose database has the given settings; every cell made is stopped afterwards."""
    made: list[CellService] = []

    async def _make(
        *,
        coalescing: bool = True,
        prewarming: bool = True,
        profile_queries: int = 1,
        retry_attempts: int = 1,
        coalesce_timeout_seconds: float = 2.0,
        **database: Any,
    ) -> CellService:
        deps = dict(SystemSettings().dependencies)
        deps["database"] = DependencySettings(
            **{
                "concurrency": 8,
                "service_time_ms": 20.0,
                "service_time_cv": 0.1,
                "call_timeout_ms": 1000.0,
                **database,
            }
        )
        settings = SystemSettings(
            dependencies=deps,
            profile_queries=profile_queries,
            retry_attempts=retry_attempts,
            coalesce_timeout_seconds=coalesce_timeout_seconds,
        )
        svc = CellService(len(made), settings, tmp_path / f"cell-{len(made)}.sqlite3")
        svc.set_switches({"request_coalescing": coalescing, "cache_prewarming": prewarming})
        made.append(svc)
        return svc

    yield _make
    for svc in made:
        await svc.stop()


async def _herd(svc: CellService, users: list[str]) -> list[int]:
    """Every request at once (none can be answered before all have looked up the cache)."""
    replies = await asyncio.gather(*(svc.profile(u) for u in users))
    return [r.status for r in replies]


async def test_concurrent_misses_share_one_computation_when_coalescing(make: Make) -> None:
    """Ten concurrent misses of one key: one computation, its 3 database calls, one key missed."""
    svc = await make(profile_queries=3)
    assert await _herd(svc, ["7"] * 10) == [200] * 10
    assert svc.profiles.computations == 1
    assert svc.clients.dependencies["database"].stats.calls == 3
    assert svc.profiles.cache.missed_keys == 1 and svc.profiles.cache.misses == 10
    assert svc.profiles.coalesced == 9
    coalesced = [e for e in svc.events.all() if e.defense == "request_coalescing"]
    assert len(coalesced) == 1 and coalesced[0].kind == "activated"


async def test_without_coalescing_every_concurrent_miss_recomputes(make: Make) -> None:
    """Coalescing off: ten concurrent misses of one key are ten computations of that key."""
    svc = await make(coalescing=False, profile_queries=3)
    assert await _herd(svc, ["7"] * 10) == [200] * 10
    assert svc.profiles.computations == 10
    assert svc.clients.dependencies["database"].stats.calls == 30
    assert svc.profiles.cache.missed_keys == 1
    assert [e for e in svc.events.all() if e.defense == "request_coalescing"] == []


@pytest.mark.parametrize(
    ("coalescing", "concurrency", "refilled"),
    [(False, 1, False), (True, 1, True), (False, 100, True)],
    ids=["herd", "coalesced", "unbounded-database"],
)
async def test_a_herd_on_a_capacity_limited_database_refills_nothing(
    make: Make, coalescing: bool, concurrency: int, refilled: bool
) -> None:
    """The loop in miniature: duplicate computations queue, each one's next call waits
    behind the others past its deadline, and the key is never stored. One computation per
    key (coalescing), or a database where nothing queues (the cut loop), refills it."""
    svc = await make(
        coalescing=coalescing,
        profile_queries=3,
        concurrency=concurrency,
        service_time_ms=20.0,
        call_timeout_ms=100.0,  # 5 calls' worth of queue: a second call behind 9 others dies
    )
    statuses = await _herd(svc, ["7"] * 10)
    if refilled:
        assert statuses == [200] * 10
        assert svc.profiles.cache.is_fresh("profile:7")
    else:
        assert statuses == [503] * 10
        assert not svc.profiles.cache.is_fresh("profile:7")
        assert svc.clients.dependencies["database"].stats.timeouts >= 10


async def test_prewarming_recomputes_only_hot_keys_a_few_at_a_time(make: Make) -> None:
    """After an invalidation only keys asked for repeatedly are prewarmed, hottest first,
    with at most PREWARM_CONCURRENCY computations on the database at once."""
    svc = await make(service_time_ms=30.0)
    hot = [str(i) for i in range(6)]
    for _ in range(3):
        assert await _herd(svc, hot) == [200] * 6
    assert await _herd(svc, ["tail-1", "tail-2"]) == [200] * 2  # asked once: the long tail
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, svc.clients.dependencies["database"].in_flight)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    answer = await svc.invalidate_cache()
    assert answer == {"removed": 8, "prewarming": 6}
    assert svc.profiles.prewarming is not None
    assert await svc.profiles.prewarming == 6
    watcher.cancel()
    assert svc.profiles.prewarm_computations == 6
    assert peak == PREWARM_CONCURRENCY
    assert all(svc.profiles.cache.is_fresh(f"profile:{k}") for k in hot)
    assert not svc.profiles.cache.is_fresh("profile:tail-1")


async def test_prewarming_joins_a_users_computation_instead_of_repeating_it(make: Make) -> None:
    """A key a user's miss is already computing is not computed again by prewarming."""
    svc = await make(service_time_ms=30.0)
    for _ in range(3):
        await svc.profile("7")
    svc.profiles.cache.invalidate()
    before = svc.profiles.computations
    user = asyncio.create_task(svc.profile("7"))
    while (
        svc.profiles.coalescer.waiters("profile:7") == 0
    ):  # until the user's computation is in flight
        await asyncio.sleep(0)
    assert await svc.profiles.prewarm(["profile:7"], "test") == 1
    assert (await user).status == 200
    assert svc.profiles.computations - before == 1 and svc.profiles.prewarm_computations == 0


async def test_prewarming_at_most_prewarm_keys(make: Make) -> None:
    """No more than PREWARM_KEYS keys are prewarmed, however many are hot."""
    svc = await make(service_time_ms=1.0)
    keys = [str(i) for i in range(PREWARM_KEYS + 5)]
    for _ in range(3):
        await _herd(svc, keys)
    assert (await svc.invalidate_cache())["prewarming"] == PREWARM_KEYS
    assert svc.profiles.prewarming is not None and await svc.profiles.prewarming == PREWARM_KEYS


async def test_a_waiter_waits_as_long_as_one_computation_may_take(make: Make) -> None:
    """The coalescing timeout covers every database call of a computation, retries included."""
    assert (await make()).profiles.coalesce_timeout == 2.0
    assert (
        await make(coalesce_timeout_seconds=10.0)
    ).profiles.coalesce_timeout == 10.0  # the seed's
    slow = await make(profile_queries=3, retry_attempts=2, call_timeout_ms=1000.0)
    assert slow.profiles.coalesce_timeout == 6.0


def test_profile_queries_must_be_a_small_integer() -> None:
    """profile_queries outside 1..10 (or not an integer) is refused with its name."""
    for bad in (0, 11, 2.5, True):
        with pytest.raises(ValueError, match="profile_queries"):
            SystemSettings(profile_queries=bad)  # type: ignore[arg-type]
