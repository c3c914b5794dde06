"""`make soak` in its short mode: it runs, prints and writes its figures, and stops all it
started (the full ten minutes are `make soak`, not the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_a_short_soak_reports_every_process_and_leaves_nothing_running(tmp_path: Path) -> None:
    """20 s of traffic, faults and a short experiment against one system: every process
    (gateway, 4 cells) has its figures, the run is judged by its journal, nothing is left."""
    port = free_port()
    out = tmp_path / "soak-results.json"
    command = [
        sys.executable, "-m", "chaosemergence.soak", "--minutes", "0.33", "--port", str(port),
        "--home", str(tmp_path / "home"), "--json", str(out),
        "--experiment", str(ROOT / "tests/e2e/experiments/soak-smoke.yaml"),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert run.returncode in (0, 1), run.stdout + run.stderr  # 1: a goal missed (noise in 20 s)
    results = json.loads(out.read_text())
    assert set(results["processes"]) == {"gateway", "cell 0", "cell 1", "cell 2", "cell 3"}
    for figures in results["processes"].values():
        assert figures["rss_mb_after_warmup"] > 0 and figures["fds_end"] > 0
        assert figures["threads_end"] >= 1 and figures["tasks_end"]
    assert results["faults_injected"] >= 2
    assert results["experiments"] and results["experiments"][0]["status"] == "completed"
    assert results["experiments"][0]["rollbacks"] == ["succeeded"]
    assert set(results["goals"]) == {
        "memory_growth_under_10_percent", "no_descriptor_growth", "no_unexplained_error",
    }  # fmt: skip
    for line in ("RSS warm MB", "gateway", "cell 3", "errors outside faults", "goals:"):
        assert line in run.stdout
    # Stopped: every process it saw, and every port.
    assert len(results["stopped"]["pids"]) == 5
    assert results["stopped"]["left_running"] == []
    assert all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
               for p in results["stopped"]["pids"])  # fmt: skip
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == "LISTEN"}
    assert port not in listening
