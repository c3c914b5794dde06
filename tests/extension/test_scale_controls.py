"""`scale` through the two controls an experiment declares, against a real reference system.

The reference-system control starts a real `chaosemergence serve` (one cell) with the retry
storm's own `system:` at scale 5; the cell reports the capacities it runs with. The traffic
control starts real Locust with `scale` 5; its recorded spec says what it runs. Expectations
derive from the experiment's YAML and the unscaled settings, never from figures written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chaoslib.exceptions import InterruptExecution

from chaosemergence.app.overrides import apply_overrides
from chaosemergence.app.settings import SystemSettings
from chaosemergence.client import AdminClient
from chaosemergence.controls import reference_system, traffic
from chaosemergence.settings import ExtensionSettings, traffic_state_dir
from chaosemergence.traffic.runner import traffic_status
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SCALE = 5


def retry_storm_system() -> dict[str, Any]:
    experiment = yaml.safe_load((ROOT / "experiments" / "retry-storm.yaml").read_text())
    for control in experiment["controls"]:
        if control["provider"]["module"] == "chaosemergence.controls.reference_system":
            system: dict[str, Any] = control["provider"]["arguments"]["system"]
            return system
    raise AssertionError("retry-storm has no reference-system control")


@pytest.fixture
def configuration(tmp_path: Path) -> Iterator[dict[str, Any]]:
    config: dict[str, Any] = {
        "emergence_url": f"http://127.0.0.1:{free_port()}",
        "emergence_state_dir": str(tmp_path / "home"),
    }
    yield config
    traffic.cleanup_control()
    reference_system.cleanup_control()


def test_scaled_controls_start_a_bigger_system_and_more_users(
    configuration: dict[str, Any],
) -> None:
    system = retry_storm_system()
    reference_system.before_experiment_control(
        {}, configuration=configuration, cells=1, system=system, scale=str(SCALE)
    )
    state = AdminClient.from_chaos(configuration, None).get("/admin/state", what="read state")
    running = state["cells"][0]["state"]["dependencies"]
    unscaled = apply_overrides(SystemSettings(), system).dependencies
    assert set(running) == set(unscaled)
    for name, dependency in unscaled.items():
        expected = SCALE * dependency.concurrency * 1000.0 / dependency.service_time_ms
        assert running[name]["capacity_per_second"] == pytest.approx(expected), name

    traffic.before_experiment_control(
        {},
        configuration=configuration,
        users=2,
        spawn_rate=2,
        duration=30,
        warmup=0,
        load={"population": 40},
        scale=SCALE,
    )
    settings = ExtensionSettings.from_chaos(configuration, None)
    spec = traffic_status(traffic_state_dir(settings))["spec"]
    assert (spec["users"], spec["spawn_rate"], spec["population"]) == (
        SCALE * 2,
        SCALE * 2,
        SCALE * 40,
    )


def test_scale_is_refused_before_anything_starts(configuration: dict[str, Any]) -> None:
    for bad in ("0.5", 25, "big"):
        with pytest.raises(InterruptExecution, match="scale must be a number in"):
            reference_system.before_experiment_control(
                {}, configuration=configuration, cells=1, scale=bad
            )
        with pytest.raises(InterruptExecution, match="scale must be a number in"):
            traffic.before_experiment_control(
                {}, configuration=configuration, users=1, warmup=0, scale=bad
            )
    with pytest.raises(httpx.HTTPError):  # nothing was started on the port
        httpx.get(f"{configuration['emergence_url']}/health", timeout=1)


def test_scale_cannot_apply_to_a_system_already_running(configuration: dict[str, Any]) -> None:
    """Its capacities are set at start: scaling only the traffic would be another experiment."""
    reference_system.before_experiment_control({}, configuration=configuration, cells=1)
    with pytest.raises(InterruptExecution, match="scale 5 multiplies the system's capacities"):
        reference_system.before_experiment_control(
            {}, configuration=configuration, cells=1, scale=SCALE
        )
