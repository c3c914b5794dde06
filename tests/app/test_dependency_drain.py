"""Draining a simulated dependency drops queued calls whose callers have gone, nothing else."""

from __future__ import annotations

import asyncio
import random

import pytest

from chaosemergence.app.dependency import DependencyTimeout, SimulatedDependency
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.settings import DependencySettings


async def test_drain_drops_only_abandoned_queued_calls() -> None:
    """One call holds the only worker; of two queued calls, the abandoned one is drained."""
    faults = FaultTable()
    dep = SimulatedDependency(
        "db",
        DependencySettings(concurrency=1, service_time_ms=1.0, call_timeout_ms=60_000.0),
        faults,
        rng=random.Random(1),
    )
    faults.add(
        {
            "kind": "latency",
            "dependency": "all",
            "percentage": 100.0,
            "duration": 60.0,
            "latency_ms": 60_000.0,
        }
    )
    holder = asyncio.create_task(dep.call())
    waiter = asyncio.create_task(dep.call())
    await asyncio.sleep(0)  # let both reach the server: one served, one queued
    with pytest.raises(DependencyTimeout):
        await dep.call(timeout=0.001)  # a caller that gives up while queued
    assert dep.waiting == 2
    assert dep.drain() == 1
    await asyncio.sleep(0)
    assert dep.waiting == 1 and dep.stats.drained == 1
    assert dep.drain() == 0  # the caller still waiting is left alone
    holder.cancel()
    waiter.cancel()
    await asyncio.gather(holder, waiter, return_exceptions=True)
    await dep.aclose()
