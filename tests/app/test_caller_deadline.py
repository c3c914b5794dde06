"""A cell with load shedding on does no work for callers who have given up (fake clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaosemergence.app.cell_service import CellService
from chaosemergence.app.settings import SystemSettings


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


async def _queued_behind_a_held_worker(
    svc: CellService, clock: Clock, caller_timeout: float
) -> tuple[int, dict[str, object], int]:
    """One profile request waits for the cell's only worker while the clock passes its
    caller's timeout; returns its status, body and the profile computations it caused."""
    gate = asyncio.Event()

    async def hold() -> None:
        async with svc.ingress.capacity.slot():
            await gate.wait()

    holder = asyncio.create_task(hold())
    while svc.ingress.capacity.busy < 1:
        await asyncio.sleep(0)
    before = svc.profiles.computations
    waiting = asyncio.create_task(svc.profile("u1", caller_timeout=caller_timeout))
    while svc.ingress.capacity.waiting < 1:
        await asyncio.sleep(0)
    clock.now += 2 * caller_timeout
    gate.set()
    await holder
    reply = await waiting
    return reply.status, reply.body, svc.profiles.computations - before


@pytest.mark.parametrize("shedding", [True, False])
async def test_a_request_whose_caller_gave_up_is_dropped_only_with_load_shedding(
    tmp_path: Path, shedding: bool
) -> None:
    """On: 503 shed_by load_shedding, no computation, an event. Off: served anyway (the
    work-for-callers-who-left link of the cascade loop)."""
    clock = Clock()
    svc = CellService(
        0,
        SystemSettings(cell_workers=1, cell_queue_limit=10),
        tmp_path / "cell.sqlite3",
        clock=clock,
        wall_clock=clock,
    )
    try:
        svc.set_defenses(shedding, ["load_shedding"])
        status, body, computed = await _queued_behind_a_held_worker(svc, clock, 0.6)
        shed = [e for e in svc.events.all() if e.defense == "load_shedding"]
        if shedding:
            assert status == 503 and body["shed_by"] == "load_shedding"
            assert computed == 0 and svc.ingress.capacity.expired == 1
            assert shed and "given up" in shed[-1].reason
        else:
            assert status == 200 and computed == 1 and svc.ingress.capacity.expired == 0
            assert not shed
    finally:
        svc.store.close()
