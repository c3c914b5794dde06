"""The soak's judgement (chaosemergence/soak.py): which failures are unexplained, growth per
process, and the flagship's system as its control would start it."""

from __future__ import annotations

from typing import Any

from chaosemergence.soak import (
    FLAGSHIP,
    GRACE_SECONDS,
    PROFILE,
    Sample,
    flagship_system,
    summarize,
    unexplained_failures,
)


def _sample(at: float, weakened: bool, requests: int, failures: int, **procs: Any) -> Sample:
    return Sample(at, procs, weakened, requests, failures)


def test_failures_count_only_while_nothing_was_weakened_nor_just_before() -> None:
    """Failures during a fault and its grace period are the fault's; later ones are not."""
    samples = [
        _sample(0, False, 100, 0),
        _sample(5, False, 200, 1),  # quiet: 1 failure of 100 requests
        _sample(10, True, 300, 50),  # a fault: explained
        _sample(15, False, 400, 60),  # just after it: explained
        _sample(10 + GRACE_SECONDS, False, 500, 62),  # within the grace
        _sample(10 + GRACE_SECONDS + 5, False, 600, 65),  # quiet again: 3 of 100
    ]
    assert unexplained_failures(samples) == (4, 200)


def _figures(pid: int, rss_mb: float, fds: int) -> dict[str, Any]:
    return {"pid": pid, "rss_bytes": rss_mb * 2**20, "open_fds": fds, "os_threads": 2, "tasks": 9}


def test_growth_after_warmup_is_judged_per_process() -> None:
    """20% more memory or 10 more descriptors after warm-up miss the goals; a restarted
    process (a new pid) is not a leak."""
    samples = [
        Sample(at, {"cell 0": _figures(1, mb, fds), "cell 1": _figures(pid, 80, 20)}, False, 0, 0)
        for at, mb, fds, pid in [
            (0, 30, 10, 2), (10, 100, 20, 2), (20, 100, 20, 2), (30, 100, 20, 2),
            (40, 120, 30, 2), (50, 120, 30, 3), (60, 120, 30, 3),
        ]
    ]  # fmt: skip
    table = summarize(samples, warm_until=10)
    assert table["cell 0"]["rss_mb_after_warmup"] == 100
    assert table["cell 0"]["rss_growth"] == 0.2
    assert not table["cell 0"]["memory_goal_met"]
    assert not table["cell 0"]["fd_goal_met"]
    assert table["cell 1"]["pids"] == [2, 3]
    assert table["cell 1"]["memory_goal_met"] and table["cell 1"]["fd_goal_met"]


def test_the_flagship_system_is_the_one_its_control_would_start() -> None:
    """The ci profile's cells, and the control's dependencies near saturation."""
    cells, overrides = flagship_system(FLAGSHIP, PROFILE)
    assert cells == 4
    assert overrides["dependencies"]["recommendations"]["concurrency"] == 2
    assert overrides["correlation_window_seconds"] == 10
