"""start_spike_over_capacity against a real system and real Locust traffic (no mocks).

A one-cell system whose database serves 4 calls/s; four steady users are the baseline. The
action must size the spike from what those users were measured to send, start it, and
return only once the profile route carries the multiple of the database's capacity.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosemergence import actions
from chaosemergence.measure import samples_total
from chaosemergence.settings import BASELINE_KEY, BASELINE_WINDOW_KEY
from chaosemergence.sizing import plan_spike
from tests.app.helpers import start_configured
from tests.conftest import RunningSystem, stop_system

OVERRIDES = {
    "cache_ttl_seconds": 600,
    "dependencies": {
        "database": {
            "concurrency": 1,
            "service_time_ms": 250,
            "call_timeout_ms": 2000,
            "queue_limit": 100,
        }
    },
}
BASELINE_SECONDS = 6.0


@pytest.fixture(scope="module")
def slow_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_configured(tmp_path_factory.mktemp("spike"), OVERRIDES, cells=1)
    yield running
    stop_system(running)


@pytest.fixture
def configuration(slow_database: RunningSystem) -> Iterator[dict[str, Any]]:
    config: dict[str, Any] = dict(slow_database.configuration)
    yield config
    actions.stop_traffic(run="spike", configuration=config)
    actions.stop_traffic(configuration=config)


def _record_baseline(system: RunningSystem, config: dict[str, Any]) -> float:
    """What the reference_system control does before the method; returns profile requests/s."""
    answer = system.admin("GET", "/admin/increase", params={"seconds": BASELINE_SECONDS}).json()
    config[BASELINE_KEY] = answer["samples"]
    config[BASELINE_WINDOW_KEY] = BASELINE_SECONDS
    total = samples_total(answer["samples"], "emergence_requests_total", route="profile")
    return total / BASELINE_SECONDS


def test_a_spike_sized_from_the_baseline_reaches_the_multiple_of_capacity(
    slow_database: RunningSystem, configuration: dict[str, Any]
) -> None:
    """Twice 4 calls/s: the users the baseline rate implies, and 0.8 x 8/s reached."""
    actions.start_traffic(
        users=4, spawn_rate=4, duration=60, population=20, hot_share=0.0,
        configuration=configuration,
    )  # fmt: skip
    time.sleep(BASELINE_SECONDS + 3)
    rate = _record_baseline(slow_database, configuration)
    assert rate > 0.5
    out = actions.start_spike_over_capacity(
        multiple=2, duration=30, ramp_timeout=30, reach=0.8, configuration=configuration
    )
    assert out["capacity_rps"] == pytest.approx(4.0)
    # The answer's baseline_rps is rounded to 3 decimals: re-deriving from it can land one
    # user either side of the ceiling the action computed from the exact rate.
    assert abs(out["users"] - plan_spike(2, 4.0, out["baseline_rps"], 4).users) <= 1
    assert (out["users"] + 4) * out["per_user_rps"] >= 0.99 * out["target_rps"]
    assert out["baseline_rps"] == pytest.approx(rate, rel=0.35)  # read a moment earlier
    assert out["reached_rps"] >= 0.8 * 8.0
    assert out["reached_multiple"] >= 1.6
    summary = actions.stop_traffic(run="spike", configuration=configuration)
    assert summary["requests"] > 0


def test_without_a_baseline_nothing_is_started(
    slow_database: RunningSystem, configuration: dict[str, Any]
) -> None:
    """No baseline window recorded: ActivityFailed, and no spike traffic left behind."""
    with pytest.raises(ActivityFailed, match="baseline"):
        actions.start_spike_over_capacity(configuration=configuration)
    assert actions.stop_traffic(run="spike", configuration=configuration) == {"running": False}


def test_without_steady_traffic_to_extrapolate_from_nothing_is_started(
    slow_database: RunningSystem, configuration: dict[str, Any], tmp_path: Path
) -> None:
    """A baseline but no running traffic: the per-user rate is unknown, so no spike."""
    _record_baseline(slow_database, configuration)
    with pytest.raises(ActivityFailed, match="none is running"):
        actions.start_spike_over_capacity(configuration=configuration)
    assert actions.stop_traffic(run="spike", configuration=configuration) == {"running": False}


def test_an_unknown_dependency_is_refused(
    slow_database: RunningSystem, configuration: dict[str, Any]
) -> None:
    """Sizing against a dependency no cell has fails naming it, before any user starts."""
    actions.start_traffic(users=2, spawn_rate=2, duration=30, configuration=configuration)
    _record_baseline(slow_database, configuration)
    with pytest.raises(ActivityFailed, match="'ledger'"):
        actions.start_spike_over_capacity(dependency="ledger", configuration=configuration)
    assert actions.stop_traffic(run="spike", configuration=configuration) == {"running": False}
