"""`chaos run` pointed at a service that is not the reference system.

The traffic control runs the user's own locustfile against the service (tests/service);
the hypothesis' probes read the service's own metric names from a real Prometheus; the
journal carries Locust's summary and HTML report. No reference system runs.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.e2e.chaosrun import CHAOS
from tests.e2e.prometheus import PrometheusServer, start_prometheus
from tests.service import start_user_service, stop_process

pytestmark = pytest.mark.e2e

# One request in ten fails with a 503: the failure radius must read about 10 %.
LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Shopper(HttpUser):
    wait_time = constant(0.05)

    @task(9)
    def work(self):
        self.client.get("/work?ms=10", name="work")

    @task(1)
    def broken(self):
        with self.client.get("/work?status=503&ms=300", name="broken", catch_response=True) as r:
            r.success()
"""
METRICS = {
    "requests": "shop_http_requests_total",
    "latency_histogram": "shop_http_request_duration_seconds",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, PrometheusServer]]:
    workdir = tmp_path_factory.mktemp("user-experiment")
    port = free_port()
    service = start_user_service(port)
    prometheus = None
    try:
        prometheus = start_prometheus(workdir, free_port(), [f"127.0.0.1:{port}"])
        yield f"http://127.0.0.1:{port}", prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_process(service)


def experiment(url: str, prometheus: str, tmp_path: Path, radius: list[float]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    body: dict[str, Any] = {
        "title": "The shop keeps its failure radius under traffic",
        "description": "A user's service, its own locustfile and metric names.",
        "configuration": {
            "prometheus_base_url": prometheus,
            "prometheus_metrics": METRICS,
            "emergence_state_dir": str(tmp_path / "state"),
        },
        "controls": [
            {
                "name": "traffic",
                "provider": {
                    "type": "python",
                    "module": "chaosemergence.controls.traffic",
                    "arguments": {
                        "locustfile": str(locustfile),
                        "host": url,
                        "users": 4,
                        "spawn_rate": 20,
                        "duration": 120,
                        "warmup": 5,
                        "html_report": str(tmp_path / "reports" / "locust.html"),
                    },
                },
            }
        ],
        "steady-state-hypothesis": {
            "title": "few requests fail",
            "probes": [
                {
                    "type": "probe",
                    "name": "failure-radius",
                    "tolerance": {"type": "range", "range": radius},
                    "provider": {
                        "type": "python",
                        "module": "chaosemergence.probes",
                        "func": "measure_failure_radius",
                        "arguments": {"window": 4, "min_requests": 20},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "probe",
                "name": "p99",
                "provider": {
                    "type": "python",
                    "module": "chaosemergence.probes",
                    "func": "latency_percentile",
                    "arguments": {"quantile": 0.99, "window": 4, "min_requests": 20},
                },
            }
        ],
        "rollbacks": [],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(body, indent=2))
    return path


def run(path: Path, tmp_path: Path) -> dict[str, Any]:
    journal = tmp_path / "journal.json"
    completed = subprocess.run(
        [*CHAOS, "run", "--journal-path", str(journal), str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert journal.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(journal.read_text())
    result["_output"] = completed.stderr[-4000:]
    return result


def test_chaos_run_with_the_users_locustfile_and_metric_names(
    shop: tuple[str, PrometheusServer], tmp_path: Path
) -> None:
    """The radius (about 10 %) and p99 come from the shop's metrics; Locust's summary and
    HTML report are in the journal; a tolerance the radius misses deviates."""
    url, prometheus = shop
    held = run(experiment(url, prometheus.url, tmp_path / "held", [5, 15]), tmp_path)
    context = held["_output"]
    assert held["status"] == "completed", context
    assert held["deviated"] is False, context
    before = held["steady_states"]["before"]["probes"][0]["output"]
    assert 5 <= before <= 15, context
    (p99,) = [r["output"] for r in held["run"] if r["activity"]["name"] == "p99"]
    assert 400 <= p99 <= 500, context  # 10 % at 300 ms: the 0.99 rank falls in (0.25, 0.5]
    (traffic,) = [e for e in held["extensions"] if e["name"] == "chaosemergence-traffic"]
    assert traffic["target"] == url
    assert set(traffic["summary"]["endpoints"]) == {"GET work", "GET broken"}
    assert traffic["summary"]["requests"] > 50
    report = Path(traffic["html_report"])
    assert report == (tmp_path / "held" / "reports" / "locust.html").resolve()
    assert "broken" in report.read_text()


def test_a_radius_outside_the_tolerance_deviates(
    shop: tuple[str, PrometheusServer], tmp_path: Path
) -> None:
    """The same run judged against [0, 1] %: the hypothesis fails (the probe is not a 0)."""
    url, prometheus = shop
    missed = run(experiment(url, prometheus.url, tmp_path / "missed", [0, 1]), tmp_path)
    assert missed["steady_states"]["before"]["steady_state_met"] is False, missed["_output"]
    assert missed["run"] == [], "the method is skipped when the hypothesis fails first"
