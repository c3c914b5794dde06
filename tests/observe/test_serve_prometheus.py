"""`chaosemergence serve --prometheus`: a local Prometheus with the config and rules, stopped
with the system; a clear error without the binary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from chaosemergence.observe.prometheus_config import alert_rules
from tests.conftest import free_port
from tests.observe.promtool import tool
from tests.observe.stack import children_named, port_open, serve, wait_until


def test_serve_prometheus_without_the_binary_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaosemergence.cli",
            "serve",
            "--prometheus",
            "--cells",
            "1",
            "--port",
            str(free_port()),
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "apt-get install prometheus" in done.stderr
    assert not list(tmp_path.glob("prometheus-*"))  # nothing started
    assert not list(tmp_path.glob("run-*/cell-*.log"))


def test_serve_prometheus_scrapes_every_process_evaluates_the_rules_and_stops_with_it(
    tmp_path: Path,
) -> None:
    tool("prometheus", "prometheus")
    prometheus_port = free_port()
    system = serve(
        tmp_path, free_port(), 2, "--prometheus", "--prometheus-port", str(prometheus_port)
    )
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    try:
        [prometheus] = children_named(system.process.pid, "prometheus")

        def up() -> dict[str, str]:
            answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": "up"}).json()
            return {r["metric"]["instance"]: r["value"][1] for r in answer["data"]["result"]}

        # The gateway and both cells, found through /targets.
        found = wait_until(
            up, lambda u: len(u) == 3 and set(u.values()) == {"1"}, 60, "3 targets up"
        )
        assert f"127.0.0.1:{system.port}" in found
        rules = httpx.get(f"{prometheus_url}/api/v1/rules").json()["data"]["groups"]
        loaded = {rule["name"] for group in rules for rule in group["rules"]}
        shipped = {rule["alert"] for group in alert_rules()["groups"] for rule in group["rules"]}
        assert loaded == shipped
        cells = httpx.get(
            f"{prometheus_url}/api/v1/query", params={"query": "emergence_cell_up"}
        ).json()["data"]["result"]
        assert sorted(r["metric"]["cell"] for r in cells) == ["0", "1"]
    finally:
        system.process.send_signal(signal.SIGTERM)
        system.process.wait(timeout=60)
    # Stopped with the system: the process is gone and its port closed.
    assert not psutil.pid_exists(prometheus.pid) or prometheus.status() == psutil.STATUS_ZOMBIE
    assert not port_open(prometheus_port)
