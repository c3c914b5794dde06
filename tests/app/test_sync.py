"""Correlation of the cells' load on the shared dependency, measured at the gateway (fake clock)."""

from __future__ import annotations

import asyncio
import random

import pytest

from chaosemergence.app.settings import DependencySettings, SystemSettings
from chaosemergence.app.sync import SharedDependencyHost, peak_to_mean


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _host(clock: Clock, cells: int = 3) -> SharedDependencyHost:
    return SharedDependencyHost(
        SystemSettings(cells=cells), rng=random.Random(1), clock=clock, wall_clock=clock
    )


def _arrive(host: SharedDependencyHost, clock: Clock, cell: int, at: float) -> None:
    clock.now = at
    host._short[cell].record()  # what call() records, without serving the call
    host._long[cell].record()


def _timeline(host: SharedDependencyHost, clock: Clock, offsets: list[float], seconds: int) -> None:
    start = clock.now
    calls = sorted(
        (start + k * 0.5 + offsets[cell] + 0.001, cell)
        for k in range(seconds * 2)
        for cell in range(len(offsets))
    )
    for at, cell in calls:
        _arrive(host, clock, cell, at)
    clock.now = start + seconds + 0.5


def test_aligned_cells_correlate_fully_and_peak() -> None:
    """Cells calling at the same instants: correlation 1, load in one phase bucket."""
    clock = Clock()
    host = _host(clock)
    _timeline(host, clock, [0.0, 0.0, 0.0], 12)
    reading = host.reading(*host.snapshot_series(10))
    assert reading["correlation"] == pytest.approx(1.0)
    assert reading["level"] == "critical" and reading["pair"] is not None
    assert reading["phase_peak_to_mean"] == pytest.approx(8.0)
    assert reading["buckets"] == 160


def test_cells_out_of_phase_do_not_correlate() -> None:
    """Cells calling at different phases of the period: correlation about 0, even profile."""
    clock = Clock()
    host = _host(clock)
    _timeline(host, clock, [0.0, 0.13, 0.31], 12)
    reading = host.reading(*host.snapshot_series(10))
    assert reading["correlation"] < 0.3 and reading["level"] == "safe"
    assert reading["phase_peak_to_mean"] < 3.0


def test_a_cell_with_too_few_calls_is_left_out() -> None:
    """Two calls that happen to coincide are no evidence of synchronization."""
    clock = Clock()
    host = _host(clock)
    _arrive(host, clock, 0, clock.now + 1.0)
    _arrive(host, clock, 1, clock.now)
    clock.now += 1.0
    assert host.reading(*host.snapshot_series(10))["correlation"] == 0.0


def test_the_loop_reacts_fast_to_strong_alignment() -> None:
    """Alignment that fills half the window is pushed at once, before the full window agrees."""
    clock = Clock()
    host = _host(clock)
    _timeline(host, clock, [0.0, 0.13, 0.31], 6)  # out of phase...
    _timeline(host, clock, [0.0, 0.0, 0.0], 5)  # ...then in step for 5 s
    reading = host.loop_reading()
    assert reading["window_correlation"] < 0.85 <= reading["fast_correlation"]
    assert reading["correlation"] == reading["fast_correlation"]


def test_shared_calls_are_served_and_counted_by_result() -> None:
    """A call is served by the capacity-limited dependency; an error fault becomes a 502."""
    host = SharedDependencyHost(SystemSettings(cells=2), rng=random.Random(1))

    async def scenario() -> tuple[int, int]:
        ok, _ = await host.call(0)
        host.faults.add(
            {"kind": "error", "dependency": "all", "percentage": 100.0, "duration": 60.0}
        )
        failed, _ = await host.call(1)
        await host.dependency.aclose()
        return ok, failed

    assert asyncio.run(scenario()) == (200, 502)
    assert host.calls[(0, "success")] == 1 and host.calls[(1, "error")] == 1


def test_peak_to_mean() -> None:
    """Peak over mean; 0 for no load."""
    assert peak_to_mean([0, 4, 0, 0]) == 4.0
    assert peak_to_mean([1, 1, 1]) == 1.0
    assert peak_to_mean([0, 0]) == 0.0


def test_users_reads_wait_in_the_pollers_queue_but_are_not_their_load() -> None:
    """A user's read shares the dependency's queue, gives up at its own (shorter) deadline,
    and is left out of the cells' load series."""
    settings = SystemSettings(cells=2, shared_read_timeout_ms=100).with_overrides(
        shared_dependency=DependencySettings(
            concurrency=1, queue_limit=8, service_time_ms=60, service_time_cv=0.1
        )
    )
    host = SharedDependencyHost(settings, rng=random.Random(1))

    async def scenario() -> tuple[int, int, int]:
        poll = asyncio.create_task(host.call(0))
        await asyncio.sleep(0)  # the poll holds the only worker
        behind, _ = await host.read()  # 60 ms behind the poll + 60 ms: past its deadline
        polled, _ = await poll
        alone, _ = await host.read()  # a read alone does not wait
        await host.dependency.aclose()
        return polled, behind, alone

    polled, behind, alone = asyncio.run(scenario())
    assert (polled, behind, alone) == (200, 504, 200)
    assert host.reads["timeout"] == 1 and host.reads["success"] == 1
    assert host.calls[(0, "success")] == 1
    assert sum(sum(s.series()[1]) for s in host._long.values()) == 1  # only the poll
