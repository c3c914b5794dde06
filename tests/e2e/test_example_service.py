"""Issue 11, done when: the example service (examples/profile_service, a Starlette service
that embeds the defenses and ``chaosemergence.embed``) runs its experiment under
``chaos run`` both ways: defenses on it holds and its breaker activated; defenses off it
deviates on what users see (the failure radius). Judged by the journal with the suite's
three verdicts (chaosemergence.verdict). A third run reads the windowed probes from a real
Prometheus scraping the service's own /metrics.

Real processes: the service (uvicorn), `chaos run` with the traffic control's Locust, and
Prometheus; a fresh service per run (about half a minute each).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chaosemergence.verdict import judge
from tests.conftest import free_port
from tests.e2e.chaosrun import CHAOS, probe_outputs
from tests.e2e.prometheus import start_prometheus

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "profile_service"


class ExampleService:
    def __init__(self, port: int, token: str, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "app.py"), "--port", str(port)],
            env={**os.environ, "ADMIN_TOKEN": token},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the example service did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[ExampleService, dict[str, str]]]:
    token = secrets.token_hex(16)
    running = ExampleService(free_port(), token, tmp_path / "service.log")
    env = {
        "CHAOSEMERGENCE_URL": running.url,
        "CHAOSEMERGENCE_ADMIN_TOKEN": token,
        "CHAOSEMERGENCE_HOME": str(tmp_path / "home"),
        "CHAOSEMERGENCE_PROMETHEUS_URL": "",
    }
    try:
        yield running, env
    finally:
        running.stop()


def _chaos_run(workdir: Path, env: dict[str, str], defenses: str) -> dict[str, object]:
    journal = workdir / f"journal-{defenses}.json"
    log = workdir / f"chaostoolkit-{defenses}.log"
    completed = subprocess.run(
        [
            *CHAOS,
            "--log-file",
            str(log),
            "run",
            "--journal-path",
            str(journal),
            "--var",
            f"defenses={defenses}",
            str(EXAMPLE / "experiment.yaml"),
        ],
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert journal.exists(), f"no journal written:\n{output}"
    result: dict[str, object] = json.loads(journal.read_text())
    result["_output"] = output + (log.read_text()[-6000:] if log.exists() else "")
    return result


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["on", "off"])
def test_the_example_services_experiment_both_ways(
    mode: str, service: tuple[ExampleService, dict[str, str]], tmp_path: Path
) -> None:
    running, env = service
    journal = _chaos_run(tmp_path, env, mode)
    ok, why = judge(mode, journal)
    assert ok, (why, probe_outputs(journal, "after"), journal["_output"])
    after = probe_outputs(journal, "after")
    if mode == "on":
        assert after["failure-radius"] <= 5
    else:
        assert after["failure-radius"] > 5
    # The rollback put every defense back, whatever the mode.
    state = httpx.get(
        f"{running.url}/admin/state",
        headers={"Authorization": f"Bearer {env['CHAOSEMERGENCE_ADMIN_TOKEN']}"},
        timeout=5,
    ).json()
    cell = state["cells"][0]["state"]
    assert all(cell["defenses"].values()) and cell["faults"] == [], cell


@pytest.mark.timeout(600)
def test_the_probes_read_the_example_through_a_real_prometheus(
    service: tuple[ExampleService, dict[str, str]], tmp_path: Path
) -> None:
    running, env = service
    prometheus = start_prometheus(tmp_path, free_port(), [f"127.0.0.1:{running.port}"])
    try:
        asked = prometheus.queries_answered()
        env = {**env, "CHAOSEMERGENCE_PROMETHEUS_URL": prometheus.url}
        journal = _chaos_run(tmp_path, env, "off")
        # Met before the method (Prometheus saw the traffic), the harm seen after it.
        ok, why = judge("off", journal)
        assert ok, (why, journal["_output"])
        # The probes asked Prometheus (instant queries), not the service's own window.
        assert prometheus.queries_answered() > asked
    finally:
        prometheus.stop()


def test_the_examples_own_locustfile_loads_the_service(
    service: tuple[ExampleService, dict[str, str]], tmp_path: Path
) -> None:
    """The locustfile shipped for users (their own Locust, not the traffic control) sends
    its three requests and the service answers them all."""
    running, _env = service
    locust = Path(sys.executable).with_name("locust")
    subprocess.run(
        [
            str(locust),
            "-f",
            str(EXAMPLE / "locustfile.py"),
            "--headless",
            "-u",
            "5",
            "-r",
            "5",
            "-t",
            "3s",
            "--host",
            running.url,
            "--csv",
            str(tmp_path / "locust"),
            "--only-summary",
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    rows = (tmp_path / "locust_stats.csv").read_text().splitlines()[1:]
    counts = {r.split(",")[1]: (int(r.split(",")[2]), int(r.split(",")[3])) for r in rows}
    for name in ("/users/[id]/profile", "/users/[id]/recommendations"):
        assert counts[name][0] > 0 and counts[name][1] == 0, counts
    assert counts["Aggregated"][1] == 0, counts
