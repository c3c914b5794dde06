"""The metric window behind /admin/increase: increases over a window, in compact snapshots."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from chaosemergence.app.window import MetricWindow


def test_increase_over_a_window_counts_series_that_appeared_later() -> None:
    """Now minus the snapshot at the window's start; a series born since counts from 0."""
    registry = CollectorRegistry()
    calls = Counter("calls", "calls", ["cell"], registry=registry)
    now = [0.0]
    window = MetricWindow(registry, clock=lambda: now[0])
    calls.labels("0").inc(5)
    window.tick()
    now[0] = 10.0
    calls.labels("0").inc(2)
    calls.labels("1").inc(3)
    window.tick()
    now[0] = 20.0
    calls.labels("0").inc(1)
    found = {e["labels"]["cell"]: e["value"] for e in window.increase(20)}
    assert found == {"0": 3.0, "1": 3.0}
    found = {e["labels"]["cell"]: e["value"] for e in window.increase(10)}
    assert found == {"0": 1.0, "1": 0.0}


def test_a_full_horizon_of_snapshots_stays_small() -> None:
    """900 snapshots of 100 series: 8 bytes a value, not a dict per second (the soak's leak)."""
    registry = CollectorRegistry()
    calls = Counter("calls", "calls", ["series"], registry=registry)
    for index in range(100):
        calls.labels(str(index)).inc()
    now = [0.0]
    window = MetricWindow(registry, clock=lambda: now[0])
    for second in range(900):
        now[0] = float(second)
        window.tick()
    snapshots = window._snapshots
    assert len(snapshots) == 900
    assert max(s.itemsize * len(s) for s in snapshots) <= 100 * 8
