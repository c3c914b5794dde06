"""The recorder control in a real `chaos run`: a series sampled every second into the journal,
the method's marks, the defenses' activations, progress lines, and the HTML report of it."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chaosemergence.controls.recorder import timeline_of
from chaosemergence.report_html import load_report_run, render_html
from tests.conftest import free_port
from tests.e2e.chaosrun import CHAOS

pytestmark = pytest.mark.e2e
EXPERIMENT = Path(__file__).parent / "experiments" / "recorder-short.yaml"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    """One real short run (its own 2-cell system, Locust traffic): (journal, its output, path)."""
    workdir = tmp_path_factory.mktemp("recorder")
    port = free_port()
    journal_path = workdir / "journal.json"
    env = {
        **os.environ,
        "CHAOSEMERGENCE_URL": f"http://127.0.0.1:{port}",
        "CHAOSEMERGENCE_HOME": str(workdir),
    }
    env.pop("CHAOSEMERGENCE_ADMIN_TOKEN", None)
    completed = subprocess.run(
        [*CHAOS, "run", "--journal-path", str(journal_path), str(EXPERIMENT)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert journal_path.exists(), output[-4000:]
    journal: dict[str, Any] = json.loads(journal_path.read_text())
    return journal, output, journal_path


def test_journal_holds_a_series_sampled_every_second_over_the_method(
    recorded: tuple[dict[str, Any], str, Path],
) -> None:
    journal, output, _ = recorded
    assert journal["status"] == "completed", output[-4000:]
    timeline = timeline_of(journal)
    assert timeline is not None, "no recorder timeline in the journal"
    phases = timeline["phases"]
    method_start, method_end = phases["method_start"], phases["method_end"]
    samples = timeline["samples"]
    times = [s["t"] for s in samples]
    assert times == sorted(times)
    # About every second: the recorded timestamps, one per interval (a slow read skips a slot).
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert timeline["interval"] == 1.0
    assert 0.9 <= statistics.median(gaps) <= 1.5, gaps
    # The series covers the whole method, with a sample for (nearly) every second of it.
    assert times[0] <= method_start and times[-1] >= method_end, (times, phases)
    inside = [t for t in times if method_start <= t <= method_end]
    assert len(inside) >= int(method_end - method_start) - 1, (len(inside), phases)
    # Figures the probes use, measured while traffic ran.
    during = [s for s in samples if method_start <= s["t"] <= method_end]
    assert all(s["requests"] > 0 for s in during), during
    assert all(isinstance(s["p99_ms"], float) and s["p99_ms"] > 0 for s in during), during
    assert all(set(s["cells"]) == {"0", "1"} for s in during), during
    assert all(s["cells_up"] == 2 for s in during), during
    assert all(s["retry_amplification"] is not None for s in during), during


def test_journal_marks_the_method_and_the_defenses_activations(
    recorded: tuple[dict[str, Any], str, Path],
) -> None:
    journal, _, _ = recorded
    timeline = timeline_of(journal)
    assert timeline is not None
    phases = timeline["phases"]
    marks = {m["name"]: m for m in timeline["marks"]}
    action = marks["break-recommendations"]
    assert action["phase"] == "method" and action["type"] == "action"
    assert action["status"] == "succeeded"
    # The action's mark spans its pause (6 s after it), inside the method.
    assert phases["method_start"] <= action["start"] < action["end"] <= phases["method_end"]
    assert action["end"] - action["start"] >= 6
    assert marks["breakers-opened"]["phase"] == "method"
    assert marks["failure-radius"]["phase"] in ("hypothesis-before", "hypothesis-after")
    activated = [e for e in timeline["events"] if e["kind"] == "activated"]
    breakers = [e for e in activated if e["defense"] == "circuit_breaker"]
    assert breakers, timeline["events"]
    # Recorded as they happened: after the fault was injected.
    assert all(e["at"] >= action["start"] for e in breakers)
    assert timeline["mode"] == {"defenses": "on", "loop": None}


def test_progress_lines_while_the_run_goes(recorded: tuple[dict[str, Any], str, Path]) -> None:
    _, output, _ = recorded
    lines = [line for line in output.splitlines() if "[progress]" in line]
    assert len(lines) >= 3, output[-3000:]
    during = [line for line in lines if "method: break-recommendations" in line]
    assert during, lines
    assert all("elapsed" in line and "left" in line for line in lines)
    assert any("p99" in line and " ms" in line and "failure radius" in line for line in during)


def test_report_of_the_real_run(recorded: tuple[dict[str, Any], str, Path]) -> None:
    _, _, path = recorded
    page = render_html([load_report_run(path)])
    assert 'data-key="p99_ms"' in page and 'class="series" data-run="0"' in page
    assert "break-recommendations" in page and 'class="activation"' in page
    assert "<script" not in page
