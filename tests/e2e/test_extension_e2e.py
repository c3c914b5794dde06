"""Traffic actions with real Locust, the safeguard control, and query_prometheus for real."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from chaoslib.exceptions import ActivityFailed

from chaosemergence import actions, probes
from tests.app.helpers import problems
from tests.conftest import RunningSystem, free_port
from tests.e2e.chaosrun import CHAOS
from tests.e2e.prometheus import start_prometheus

pytestmark = pytest.mark.e2e
HERE = Path(__file__).parent


def _locust_pids(target: str | None = None) -> list[int]:
    """Locust processes on this machine; with `target`, only those sent at that system
    (other runs may share the machine: a developer's, another checkout's suite)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if not any("locustfile.py" in part for part in cmdline):
            continue
        if target is None or target.rstrip("/") in cmdline:
            found.append(p.pid)
    return found


@pytest.mark.parametrize("workers", [0, 2])
def test_start_and_stop_traffic_with_real_locust(clean_system: RunningSystem, workers: int) -> None:
    """start_traffic drives real requests (local, or master + 2 workers); stop_traffic ends it."""
    config = clean_system.configuration
    started = actions.start_traffic(20, 20, 60, workers=workers, configuration=config)
    assert len(started["pids"]) == 1 + workers
    try:
        deadline = time.monotonic() + 30
        requests = 0.0
        while time.monotonic() < deadline and requests < 30:
            time.sleep(0.5)
            samples = clean_system.admin("GET", "/admin/increase", params={"seconds": 30}).json()
            requests = sum(
                s["value"] for s in samples["samples"] if s["name"] == "emergence_requests_total"
            )
        assert requests >= 30
    finally:
        summary = actions.stop_traffic(configuration=config)
    assert summary["requests"] > 0
    assert not set(started["pids"]) & set(_locust_pids())
    assert actions.stop_traffic(configuration=config) == {"running": False}


def test_traffic_refuses_bad_input_naming_the_argument(clean_system: RunningSystem) -> None:
    """A zero user count or an unknown shape fails before any process starts."""
    with pytest.raises(ActivityFailed, match="users"):
        actions.start_traffic(0, 1, 10, configuration=clean_system.configuration)
    with pytest.raises(ActivityFailed, match="shape"):
        actions.start_traffic(5, 1, 10, shape="zigzag", configuration=clean_system.configuration)
    assert not _locust_pids(clean_system.url)


def test_safeguard_aborts_within_seconds_and_rollbacks_run(
    clean_system: RunningSystem, tmp_path: Path
) -> None:
    """A breached blast radius stops the run long before its pause ends; the rollback still runs."""
    journal_path = tmp_path / "journal.json"
    env = {
        **os.environ,
        "CHAOSEMERGENCE_URL": clean_system.url,
        "CHAOSEMERGENCE_HOME": str(clean_system.state_dir),
    }
    started = time.monotonic()
    subprocess.run(
        [
            *CHAOS,
            "run",
            "--journal-path",
            str(journal_path),
            str(HERE / "experiments" / "safeguard-trips.yaml"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    elapsed = time.monotonic() - started
    journal = json.loads(journal_path.read_text())
    assert journal["status"] in ("interrupted", "aborted"), journal["status"]
    assert elapsed < 60, f"the 90 s pause should have been cut short, took {elapsed:.0f} s"
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    # The project's own safeguard path of "rollbacks on every path" (docs/trust.md).
    assert problems(clean_system) == []
    assert not _locust_pids(clean_system.url)


def test_safeguard_out_of_range_limit_fails_validation(tmp_path: Path) -> None:
    """`chaos validate` rejects a safeguard whose max_failure_radius is 150."""
    source = (HERE / "experiments" / "safeguard-trips.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(source.replace("max_failure_radius: 30", "max_failure_radius: 150"))
    out = subprocess.run(
        [*CHAOS, "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "CHAOSEMERGENCE_URL": "http://127.0.0.1:1"},
    )
    assert out.returncode != 0
    assert "max_failure_radius" in out.stdout + out.stderr


def test_query_prometheus_against_a_real_server(system: RunningSystem, tmp_path: Path) -> None:
    """query_prometheus returns a scalar or one sample as a float, and refuses several series."""
    prometheus = start_prometheus(tmp_path, free_port(), [f"127.0.0.1:{system.port}"])
    try:
        config = {**system.configuration, "prometheus_url": prometheus.url}
        assert probes.query_prometheus("sum(up)", configuration=config) == 1.0
        assert probes.query_prometheus("scalar(vector(42))", configuration=config) == 42.0
        assert math.isnan(probes.query_prometheus("sum(absent_metric_xyz)", configuration=config))
        with pytest.raises(ActivityFailed, match="series"):
            probes.query_prometheus("up or vector(1)", configuration=config)
    finally:
        prometheus.stop()


def test_python_is_the_interpreter_under_test() -> None:
    """The suite runs on Python >= 3.12 (chaostoolkit-lib 1.45 needs it)."""
    assert sys.version_info >= (3, 12)
