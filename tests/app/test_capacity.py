"""The cell's worker pool: requests wait for a worker; a full line is refused at once."""

from __future__ import annotations

import asyncio

import pytest

from chaosemergence.app.capacity import CallerGaveUp, CellCapacity, CellOverloaded


async def test_requests_beyond_the_workers_wait_and_a_full_line_is_refused() -> None:
    """With 2 workers and a line of 1, a 3rd request waits and a 4th is refused."""
    capacity = CellCapacity(workers=2, cost_ms=0, queue_limit=1)
    gate = asyncio.Event()
    entered = 0

    async def request() -> None:
        nonlocal entered
        async with capacity.slot():
            entered += 1
            await gate.wait()

    holders = [asyncio.create_task(request()) for _ in range(3)]
    while capacity.busy + capacity.waiting < 3:
        await asyncio.sleep(0)
    assert (capacity.busy, capacity.waiting, entered) == (2, 1, 2)
    with pytest.raises(CellOverloaded):
        async with capacity.slot():
            pass
    assert capacity.refused == 1
    gate.set()
    await asyncio.gather(*holders)
    assert entered == 3 and capacity.busy == 0


async def test_zero_workers_means_unlimited() -> None:
    """The default (0 workers) never waits and never refuses."""
    capacity = CellCapacity(workers=0, cost_ms=0, queue_limit=0)
    async with capacity.slot():
        assert capacity.utilization == 0.0


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_occupancy_is_requests_in_the_pool_per_worker_over_time() -> None:
    """2 workers: one held for the 1st second; then 2 held and 2 waiting for the 2nd."""
    clock = _Clock()
    capacity = CellCapacity(workers=2, cost_ms=0, queue_limit=10, clock=clock)
    gate = asyncio.Event()

    async def request() -> None:
        async with capacity.slot():
            await gate.wait()

    first = asyncio.create_task(request())
    while capacity.busy < 1:
        await asyncio.sleep(0)
    clock.now += 1.0
    assert capacity.take_occupancy() == pytest.approx(0.5)
    others = [asyncio.create_task(request()) for _ in range(3)]
    while capacity.busy + capacity.waiting < 4:
        await asyncio.sleep(0)
    clock.now += 1.0
    # Saturated with a line: above 1, what the control loop must not read as "low load".
    assert capacity.take_occupancy() == pytest.approx(2.0)
    gate.set()
    await asyncio.gather(first, *others)
    clock.now += 1.0
    assert capacity.take_occupancy() == 0.0


def test_an_unlimited_pool_has_no_occupancy() -> None:
    assert CellCapacity(workers=0, cost_ms=0, queue_limit=0).take_occupancy() == 0.0


async def test_a_request_whose_caller_gave_up_in_the_line_frees_its_worker_unserved() -> None:
    """1 worker held; two wait with deadlines. The clock passes the first one's: when the
    worker frees, that one is dropped (CallerGaveUp, no work) and the other is served."""
    clock = _Clock()
    capacity = CellCapacity(workers=1, cost_ms=0, queue_limit=10, clock=clock)
    gate = asyncio.Event()
    served: list[str] = []

    async def request(name: str, deadline: float | None) -> None:
        async with capacity.slot(deadline):
            if name == "holder":
                await gate.wait()
            served.append(name)

    holder = asyncio.create_task(request("holder", None))
    while capacity.busy < 1:
        await asyncio.sleep(0)
    gone = asyncio.create_task(request("gone", clock.now + 0.5))
    patient = asyncio.create_task(request("patient", clock.now + 5.0))
    while capacity.waiting < 2:
        await asyncio.sleep(0)
    clock.now += 1.0
    gate.set()
    await holder
    with pytest.raises(CallerGaveUp):
        await gone
    await patient
    assert served == ["holder", "patient"]
    assert capacity.expired == 1 and capacity.busy == 0 and capacity.waiting == 0
