"""The flagship experiment end to end: `chaos run` as a subprocess, judged by its journal.

Against a real Prometheus here; its three verdicts on the embedded default (the control
starts the system, probes read the services' own metrics) are in test_experiments.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_system, stop_system
from tests.e2e.chaosrun import CHAOS, ROOT, assert_held, probe_outputs, run_experiment
from tests.e2e.prometheus import start_prometheus

pytestmark = pytest.mark.e2e
FLAGSHIP = "validate-emergence-defenses.yaml"


def test_every_experiment_validates() -> None:
    """`chaos validate` accepts every experiment file."""
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert files
    for path in files:
        out = subprocess.run(
            [*CHAOS, "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0 and "looks valid" in out.stdout + out.stderr, (path, out.stderr)


def test_flagship_against_a_real_prometheus(tmp_path: Path) -> None:
    """With prometheus_url set, the p99 probe asks a real Prometheus scraping every process."""
    system = start_system(tmp_path / "system", cells=4)
    prometheus = None
    try:
        cells = system.admin("GET", "/admin/state").json()["cells"]
        targets = [f"127.0.0.1:{system.port}"] + [c["url"].removeprefix("http://") for c in cells]
        prometheus = start_prometheus(tmp_path, free_port(), targets)
        env = {
            "CHAOSEMERGENCE_URL": system.url,
            "CHAOSEMERGENCE_HOME": str(system.state_dir),
            "CHAOSEMERGENCE_PROMETHEUS_URL": prometheus.url,
        }
        journal = run_experiment(FLAGSHIP, tmp_path, env)
        assert_held(journal)
        assert probe_outputs(journal, "after")["latency-remains-bounded"] > 0, "no traffic"
        activation = next(
            r for r in journal["run"] if r["activity"]["name"] == "verify-defenses-activated"
        )
        assert activation["output"] is True
        assert f"from Prometheus at {prometheus.url}" in journal["_output"]
        series = prometheus.query("sum(emergence_requests_total)")
        assert float(series[0]["value"][1]) > 100  # type: ignore[index]
        # The system was already running: the control must not have stopped it.
        assert httpx.get(f"{system.url}/health", timeout=2).status_code == 200
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_system(system)
