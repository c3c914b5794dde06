"""The weekly workflow's own command, for real: `.ci/weekly.sh` on one experiment in the ci
profile, with a real Prometheus and `chaos`: three verdicts and every artifact a red week needs.

The command is read from the workflow (its experiment step, the profile swapped for `ci`), so
the suite runs what the weekly run runs. One quick experiment only: three real runs, ~2.5 min.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from chaosemergence.verdict import MODES, judge
from chaosemergence.weekly import wrong_verdicts
from tests.conftest import free_port
from tests.e2e.chaosrun import ROOT
from tests.e2e.prometheus import prometheus_binary
from tests.test_weekly import weekly_command

pytestmark = pytest.mark.e2e
EXPERIMENT = "retry-storm"
CELLS = 4  # retry-storm's


def test_weekly_script_three_verdicts_through_prometheus_and_artifacts(tmp_path: Path) -> None:
    prometheus_binary()  # skip (or fail in CI) without Prometheus
    command = weekly_command()
    assert command[1:] == ["$EXPERIMENT", "weekly"]
    port, prometheus_port = free_port(), free_port()
    results = tmp_path / "results"
    completed = subprocess.run(
        [str(ROOT / command[0]), EXPERIMENT, "ci"],
        cwd=ROOT,
        env={
            **os.environ,
            "CHAOSEMERGENCE_URL": f"http://127.0.0.1:{port}",
            "PROMETHEUS_PORT": str(prometheus_port),
            "RESULTS_DIR": str(results),
            "VENV": sys.prefix,
            "TMPDIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert completed.returncode == 0, output + "".join(_verdicts(results))

    for mode in MODES:
        journal = json.loads((results / f"journal-{EXPERIMENT}-{mode}.json").read_text())
        ok, why = judge(mode, journal)
        assert ok, (mode, why, output)
        folder = results / f"{EXPERIMENT}-{mode}"
        assert f"three verdicts, {mode}: OK" in (folder / "run.txt").read_text()
        # The probes read through Prometheus: the windowed ones and latency_percentile.
        log = (results / f"chaostoolkit-{EXPERIMENT}-{mode}.log").read_text()
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        assert f"s from Prometheus at {prometheus_url}" in log, mode
        assert f"latency_percentile: q0.99 from Prometheus at {prometheus_url}" in log, mode

        # The reference system's log, each cell's log and settings.
        serve_log = (folder / f"serve-{port}.log").read_text()
        assert f"gateway on http://127.0.0.1:{port} with {CELLS} cells" in serve_log
        for cell in range(CELLS):
            assert (folder / "cells" / f"cell-{cell}.log").exists(), (mode, cell)
        settings = json.loads((folder / "cells" / "settings.json").read_text())
        assert settings["cells"] == CELLS
        if mode == "on":
            events = [
                json.loads(line)
                for path in (folder / "cells").glob("cell-*.events.jsonl")
                for line in path.read_text().splitlines()
            ]
            assert {"circuit_breaker", "breaker_trip"} <= {e["defense"] for e in events}

        # Locust: CSV stats with traffic in them, and the HTML report.
        traffic = folder / f"traffic-{port}"
        with (traffic / "locust_stats.csv").open() as handle:
            rows = {row["Name"]: row for row in csv.DictReader(handle)}
        assert int(rows["Aggregated"]["Request Count"]) > 500, mode
        assert (traffic / "locust_stats_history.csv").stat().st_size > 0
        html = (traffic / "locust_report.html").read_text()
        assert "<html" in html.lower() and "locust" in html.lower()

        # Prometheus: it found the gateway and every cell through /targets, all up; its
        # snapshot holds the run's samples.
        up = json.loads((folder / "prometheus" / "up.json").read_text())["data"]["result"]
        instances = {r["metric"]["instance"]: r["value"][1] for r in up}
        assert f"127.0.0.1:{port}" in instances and len(instances) == CELLS + 1, instances
        assert set(instances.values()) == {"1"}
        snapshot = folder / "prometheus" / "snapshot"
        blocks = [json.loads(meta.read_text())["stats"] for meta in snapshot.glob("*/meta.json")]
        assert blocks and sum(b["numSamples"] for b in blocks) > 1000, blocks
        assert max(b["numSeries"] for b in blocks) > 100, blocks
        assert (snapshot / "wal").is_dir(), "promtool tsdb dump needs one"

    # No admin token, no database copied; the temporary homes are gone.
    copied = [p.name for p in results.rglob("*")]
    assert not [n for n in copied if n.startswith("admin-token") or ".sqlite3" in n], copied
    assert not list(tmp_path.glob("weekly-*")), "the script's temporary folder outlived it"
    # Nothing left running: the system and Prometheus are stopped.
    for stopped in (port, prometheus_port):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{stopped}/", timeout=1)
    # The week is green, as the workflow's report job would judge it.
    assert wrong_verdicts(results, [EXPERIMENT]) == []
    report = subprocess.run(
        [sys.executable, "-m", "chaosemergence.report", str(results), "--summary"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"`{EXPERIMENT}`" in report.stdout


def _verdicts(results: Path) -> list[str]:
    """Each mode's judged journal (verdict and every probe), to say why a week went red."""
    explained = []
    for mode in MODES:
        path = results / f"journal-{EXPERIMENT}-{mode}.json"
        if path.exists():
            journal = json.loads(path.read_text())
            _, why = judge(mode, journal)
            failed = [
                f"{r['activity']['name']}: {r.get('status')} {str(r.get('exception') or '')[-300:]}"
                for r in journal.get("run", [])
                if r.get("status") != "succeeded"
            ]
            explained.append(f"\n--- {mode}: {why}; not succeeded: {failed}")
    return explained
