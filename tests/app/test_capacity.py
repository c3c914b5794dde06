"""The cell's worker pool: requests wait for a worker; a full line is refused at once."""

from __future__ import annotations

import asyncio

import pytest

from chaosemergence.app.capacity import CellCapacity, CellOverloaded


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
