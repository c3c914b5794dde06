"""computations_per_key against a real reference system: a herd's size, off and on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

import probes
from tests.app.helpers import start_configured
from tests.conftest import RunningSystem, stop_system

HERD = 10
# A computation takes 0.5 s on a database with room for every duplicate: the concurrent
# misses of one key all arrive while the first computation is still running.
SLOW_DATABASE = {
    "dependencies": {
        "database": {"concurrency": 32, "service_time_ms": 500, "call_timeout_ms": 3000}
    }
}


@pytest.fixture
def herd_system(tmp_path: Path) -> Iterator[RunningSystem]:
    running = start_configured(tmp_path, SLOW_DATABASE, cells=1)
    yield running
    stop_system(running)


def _concurrent_reads(system: RunningSystem, user: str) -> list[int]:
    """HERD reads of one user's profile, released together."""
    start = threading.Barrier(HERD)

    def read(_: int) -> int:
        with httpx.Client(timeout=10) as client:
            start.wait()
            return client.get(f"{system.url}/users/{user}/profile").status_code

    with ThreadPoolExecutor(HERD) as pool:
        return list(pool.map(read, range(HERD)))


@pytest.mark.parametrize("coalescing", [False, True], ids=["every-miss-computes", "coalesced"])
def test_computations_per_key_is_the_herd_size(
    herd_system: RunningSystem, coalescing: bool
) -> None:
    """Ten concurrent misses of one key: about 10 computations per key without coalescing,
    exactly 1 with it (prewarming off, so every computation is a user's)."""
    system = herd_system
    names = ["cache_prewarming"] + ([] if coalescing else ["request_coalescing"])
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": names})
    assert _concurrent_reads(system, "herd-7") == [200] * HERD
    value = probes.computations_per_key(window=60, configuration=system.configuration)
    if coalescing:
        assert value == 1.0
    else:
        assert value >= HERD - 2  # a read the gateway was slow to pass on may find it cached


def test_computations_per_key_fails_without_a_missed_key(herd_system: RunningSystem) -> None:
    """No key missed in the window: the probe fails instead of answering a passing number."""
    with pytest.raises(ActivityFailed, match="no herd to measure"):
        probes.computations_per_key(window=60, configuration=herd_system.configuration)
