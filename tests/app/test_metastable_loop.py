"""The metastable loop's two links in the reference system, and the recovery that breaks them.

Real asyncio servers (semaphores and sleeps), no mocks: a simulated database either serves
calls whose callers have gone (wasted work, what keeps a metastable queue stuck) or drops
them at dequeue (`serve_abandoned: false`, the experiment's loop cut); the staged recovery's
cache warm-up goes at the pace the database serves, after a drain and a reset of the
client state that remembers the stuck state's failures.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaosemergence.app.cell_service import CellService
from chaosemergence.app.dependency import DependencyTimeout, SimulatedDependency
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.settings import DependencySettings, SystemSettings
from chaosemergence.defenses.control import RecoveryAction


def _database(serve_abandoned: bool) -> SimulatedDependency:
    settings = DependencySettings(
        concurrency=1,
        queue_limit=100,
        service_time_ms=20.0,
        service_time_cv=0.1,
        call_timeout_ms=1000.0,
        serve_abandoned=serve_abandoned,
    )
    return SimulatedDependency("database", settings, FaultTable(), rng=random.Random(3))


@pytest.mark.parametrize("serve_abandoned", [True, False])
async def test_a_call_whose_caller_gave_up_is_wasted_work_unless_dropped_at_dequeue(
    serve_abandoned: bool,
) -> None:
    """Five callers give up behind a busy worker: served anyway (wasted) or dropped unserved."""
    db = _database(serve_abandoned)
    holder = asyncio.create_task(db.call())  # takes the only worker for ~20 ms
    await asyncio.sleep(0)
    for _ in range(5):
        with pytest.raises(DependencyTimeout):
            await db.call(timeout=0.001)
    assert db.waiting == 5
    await holder
    started = asyncio.get_running_loop().time()
    await db.call()  # a live caller behind the five abandoned calls
    waited = asyncio.get_running_loop().time() - started
    if serve_abandoned:
        assert db.stats.wasted == 5 and db.stats.drained == 0
        assert waited >= 5 * 0.015  # it waited for five services nobody wanted
    else:
        assert db.stats.wasted == 0 and db.stats.drained == 5
        assert waited < 3 * 0.020  # only its own service time
    assert db.stats.served == (7 if serve_abandoned else 2)
    await db.aclose()


def test_capacity_is_concurrency_over_the_mean_service_time() -> None:
    """One worker at 20 ms serves 50 calls/s; four at 100 ms, 40."""
    assert _database(True).capacity_per_second == pytest.approx(50.0)
    four = DependencySettings(concurrency=4, service_time_ms=100.0)
    dep = SimulatedDependency("db", four, FaultTable(), rng=random.Random(1))
    assert dep.capacity_per_second == pytest.approx(40.0)


def test_serve_abandoned_must_be_a_boolean() -> None:
    """A typo such as "no" is refused rather than read as true."""
    with pytest.raises(ValueError, match="serve_abandoned"):
        DependencySettings(serve_abandoned="no")  # type: ignore[arg-type]


def _settings() -> SystemSettings:
    # One worker at 20 ms and callers who wait 50 ms: more than two calls queued at once
    # and the rest time out.
    database = DependencySettings(
        concurrency=1, queue_limit=100, service_time_ms=20.0, service_time_cv=0.1,
        call_timeout_ms=50.0,
    )  # fmt: skip
    return SystemSettings(dependencies={"database": database}, retry_attempts=1)


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[CellService]:
    svc = CellService(0, _settings(), tmp_path / "cell.sqlite3")
    yield svc
    svc.store.close()


def _make_hot(svc: CellService, count: int) -> list[str]:
    keys = [f"profile:u{i}" for i in range(count)]
    for _ in range(3):
        for key in keys:
            svc.profiles.cache.lookup(key, allow_stale=False)
    return keys


async def test_the_recovery_warms_every_hot_key_at_the_pace_the_database_serves(
    cell: CellService,
) -> None:
    """Ten keys on one 20 ms worker with 50 ms timeouts: one at a time, all ten warm."""
    keys = _make_hot(cell, 10)
    db = cell.clients.dependencies["database"]
    try:
        assert await cell.control.warm_caches("test") == 10
        assert all(cell.profiles.cache.is_fresh(k) for k in keys)
        assert db.stats.timeouts == 0 and db.stats.succeeded == 10
    finally:
        await cell.stop()


async def test_ten_calls_at_once_on_that_database_mostly_time_out(cell: CellService) -> None:
    """Why the pace matters: the same ten calls at once, and most wait past their timeout."""
    db = cell.clients.dependencies["database"]
    try:
        answers = await asyncio.gather(*(db.call() for _ in range(10)), return_exceptions=True)
        assert sum(isinstance(a, DependencyTimeout) for a in answers) >= 6
    finally:
        await cell.stop()


async def test_warm_caches_drains_dead_work_and_forgets_the_stuck_states_failures(
    cell: CellService,
) -> None:
    """A queue of abandoned calls and a throttle that rejects nearly all: both gone first."""
    _make_hot(cell, 3)
    db = cell.clients.dependencies["database"]
    throttle = cell.clients.throttles["database"]
    try:
        for _ in range(200):  # the stuck state: nothing accepted, every call refused
            throttle.allow()
        assert throttle.reject_probability() > 0.9
        blocker = asyncio.create_task(db.call(timeout=5.0))
        await asyncio.sleep(0)
        for _ in range(5):
            with pytest.raises(DependencyTimeout):
                await db.call(timeout=0.001)
        assert db.waiting == 5
        cell.control.perform(RecoveryAction.WARM_CACHES)
        await asyncio.sleep(0)  # the drained calls' tasks see their cancellation
        assert db.stats.drained == 5 and db.waiting == 0
        assert throttle.reject_probability() == 0.0
        await blocker
        for _ in range(100):  # the warm-up runs in the background
            if all(cell.profiles.cache.is_fresh(f"profile:u{i}") for i in range(3)):
                break
            await asyncio.sleep(0.02)
        assert all(cell.profiles.cache.is_fresh(f"profile:u{i}") for i in range(3))
        assert db.stats.wasted == 0
    finally:
        await cell.stop()
