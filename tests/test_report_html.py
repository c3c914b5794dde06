"""`chaosemergence report`: one self-contained HTML file from journals, on vs off overlaid."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaosemergence.controls.recorder import TIMELINE_NAME
from chaosemergence.report_html import load_report_run, mode_of, render_html, standalone_chart
from chaosemergence.score import score_run

T0 = 1_800_000_000.0  # the method starts here in both runs (t = 0 on the report's axis)
ACTIONS = ("induce-retry-storm", "create-thundering-herd")


def _probe_run(name: str, func: str, output: Any, met: bool) -> dict[str, Any]:
    return {
        "activity": {"type": "probe", "name": name, "provider": {"type": "python", "func": func}},
        "status": "succeeded",
        "output": output,
        "tolerance_met": met,
    }


def make_journal(mode: str, p99_peak: float, activations: int) -> dict[str, Any]:
    """A journal of the shape `chaos run` writes, with a recorder timeline of 40 samples."""
    held = p99_peak <= 1000
    hypothesis = {
        "title": "stable",
        "probes": [
            {"type": "probe", "name": "latency-remains-bounded",
             "tolerance": {"type": "range", "range": [0, 1000]},
             "provider": {"type": "python", "func": "latency_percentile"}},
            {"type": "probe", "name": "no-cascade-failures",
             "tolerance": {"type": "range", "range": [0, 10]},
             "provider": {"type": "python", "func": "measure_failure_radius"}},
        ],
    }  # fmt: skip
    samples = []
    for second in range(-10, 30):
        faulted = 0 <= second < 20
        samples.append(
            {
                "t": T0 + second,
                "requests": 200.0,
                "p99_ms": p99_peak if faulted else 100.0,
                "error_rate_pct": 30.0 if faulted and not held else 0.0,
                "failure_radius_pct": 35.0 if faulted and not held else 0.0,
                "retry_amplification": 5.0 if faulted and not held else 0.6,
                "cells_up": 4,
                "cells_total": 4,
                "cells": {str(c): (40.0 if faulted and not held else 0.0) for c in range(4)},
            }
        )
    marks = [
        {"name": name, "type": "action", "phase": "method", "start": T0 + 0.1 * i,
         "end": T0 + 0.1 * i + 0.05, "status": "succeeded"}
        for i, name in enumerate(ACTIONS)
    ]  # fmt: skip
    events = [
        {"at": T0 + 1 + i, "defense": "circuit_breaker", "kind": "activated", "cell": i % 4,
         "reason": f"trip {i}"}
        for i in range(activations)
    ]  # fmt: skip
    after = [
        _probe_run("latency-remains-bounded", "latency_percentile", p99_peak * 0.9, held),
        _probe_run("no-cascade-failures", "measure_failure_radius", 0.0, True),
    ]
    return {
        "experiment": {"title": "Flagship", "steady-state-hypothesis": hypothesis},
        "start": "2026-11-29T22:55:06+00:00",
        "status": "completed",
        "deviated": not held,
        "steady_states": {
            "before": {
                "steady_state_met": True,
                "probes": [
                    _probe_run("latency-remains-bounded", "latency_percentile", 100.0, True),
                    _probe_run("no-cascade-failures", "measure_failure_radius", 0.0, True),
                ],
            },
            "after": {"steady_state_met": held, "probes": after if held else after[:1]},
        },
        "run": [
            {
                "activity": {
                    "type": "probe",
                    "name": "verify-defenses-activated",
                    "provider": {"func": "check_defense_activation"},
                },
                "status": "succeeded" if activations else "failed",
                "output": True if activations else None,
            }
        ],
        "extensions": [
            {
                "name": TIMELINE_NAME,
                "version": 1,
                "interval": 1.0,
                "window": 5.0,
                "started_at": T0 - 10,
                "ended_at": T0 + 30,
                "phases": {"method_start": T0, "method_end": T0 + 20},
                "mode": {"defenses": mode, "loop": "on"},
                "samples": samples,
                "events": events,
                "marks": marks,
                "errors": 0,
                "last_error": None,
            }
        ],
    }


@pytest.fixture
def journals(tmp_path: Path) -> tuple[Path, Path]:
    on = tmp_path / "journal-flagship-on.json"
    off = tmp_path / "journal-flagship-off.json"
    on.write_text(json.dumps(make_journal("on", 450.0, activations=7)))
    off.write_text(json.dumps(make_journal("off", 2000.0, activations=0)))
    return on, off


def _chart(page: str, key: str) -> str:
    match = re.search(rf'<svg class="chart" data-key="{key}".*?</svg>', page, re.S)
    assert match, f"no {key} chart"
    return match.group(0)


def test_report_overlays_both_runs_on_every_chart(journals: tuple[Path, Path]) -> None:
    runs = [load_report_run(path, i) for i, path in enumerate(journals)]
    page = render_html(runs)
    for key in ("p99_ms", "error_rate_pct", "failure_radius_pct", "retry_amplification"):
        chart = _chart(page, key)
        paths = re.findall(r'<path class="series" data-run="(\d)" d="([^"]+)"', chart)
        assert [run for run, _ in paths] == ["0", "1"], key
        # 40 samples each, drawn on one axis: the same x for the same second of both runs.
        xs = [[p.split(",")[0][1:] for p in d.split()] for _, d in paths]
        assert len(xs[0]) == len(xs[1]) == 40 and xs[0] == xs[1]
    # The off run's p99 reaches higher on the chart (smaller y) than the on run's.
    p99 = re.findall(r'class="series" data-run="(\d)" d="([^"]+)"', _chart(page, "p99_ms"))
    top = {run: min(float(p.split(",")[1]) for p in d.split()) for run, d in p99}
    assert top["1"] < top["0"]
    # The hypothesis' limit is drawn where the tolerance says.
    assert "tolerance 1000" in _chart(page, "p99_ms") and "tolerance 10" in page
    assert "defenses on (journal-flagship-on.json)" in page
    assert "defenses off (journal-flagship-off.json)" in page
    assert page.count('class="health"') == 2


def test_report_marks_the_actions_and_the_activations(journals: tuple[Path, Path]) -> None:
    page = render_html([load_report_run(path, i) for i, path in enumerate(journals)])
    chart = _chart(page, "p99_ms")
    for name in ACTIONS:
        assert re.search(rf'<line class="mark action" data-run="0"[^>]*><title>[^<]*{name}', chart)
        assert re.search(rf'<line class="mark action" data-run="1"[^>]*><title>[^<]*{name}', chart)
        assert 'class="marklabel"' in chart and name in chart
    # Seven activations, all in the defended run, each a marker with its defense and cell.
    activations = re.findall(r'<path class="activation" data-run="(\d)"[^>]*><title>([^<]*)', chart)
    assert [run for run, _ in activations] == ["0"] * 7
    assert all("circuit_breaker activated in cell" in title for _, title in activations)
    # The action marks sit at t = 0 of the axis, where the method started.
    x_zero = re.search(r'<text class="tick" x="([\d.]+)" y="\d+" text-anchor="middle">0<', chart)
    first = re.search(r'<line class="mark action" data-run="0" x1="([\d.]+)"', chart)
    assert x_zero and first and abs(float(x_zero.group(1)) - float(first.group(1))) < 1


def test_report_shows_verdicts_scores_and_the_hypothesis(journals: tuple[Path, Path]) -> None:
    on, off = (load_report_run(path, i) for i, path in enumerate(journals))
    page = render_html([on, off])
    assert on.mode == "on" and off.mode == "off"
    assert "OK: held, and its defenses activated" in page
    assert "OK: deviated on harm: latency-remains-bounded" in page
    assert "The defenses are proven" in page
    on_score = score_run(json.loads(journals[0].read_text())).score
    off_score = score_run(json.loads(journals[1].read_text())).score
    assert on_score is not None and off_score is not None and on_score > off_score
    assert f"{on_score:.0f} / 100" in page and f"{off_score:.0f} / 100" in page
    assert "0.5 + 0.5 &times; headroom" in page  # the score explained
    table = re.search(r'<table class="hypothesis">.*?</table>', page, re.S)
    assert table and "1800 ✗" in table.group(0) and "405 ✓" in table.group(0)


def test_report_is_self_contained(journals: tuple[Path, Path]) -> None:
    page = render_html([load_report_run(path, i) for i, path in enumerate(journals)])
    lowered = page.lower()
    for needle in ("<script", "src=", "href=", "url(", "@import", "http:", "https:", "<link"):
        assert needle not in lowered, needle
    assert "<svg" in page and "<style>" in page


def test_cli_writes_the_report_and_prints_its_path(
    journals: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    completed = subprocess.run(
        [sys.executable, "-m", "chaosemergence.cli", "report", *map(str, journals), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"report: {out.resolve()}"
    assert 'data-key="p99_ms"' in out.read_text()
    svg = tmp_path / "p99.svg"
    charted = subprocess.run(
        [sys.executable, "-m", "chaosemergence.cli", "report", *map(str, journals),
         "--chart", "p99_ms", "-o", str(svg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert charted.returncode == 0, charted.stderr
    chart = svg.read_text()
    assert chart.startswith('<svg xmlns="http://www.w3.org/2000/svg" class="chart"')
    assert chart.count('class="series"') == 2 and "defenses off" in chart
    missing = subprocess.run(
        [sys.executable, "-m", "chaosemergence.cli", "report", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_a_journal_without_a_timeline_still_reports(tmp_path: Path) -> None:
    journal = make_journal("on", 450.0, activations=1)
    journal["extensions"] = []
    path = tmp_path / "journal-flagship-off.json"
    path.write_text(json.dumps(journal))
    run = load_report_run(path)
    assert mode_of(journal, path) == "off" and run.mode == "off"  # from the file name
    page = render_html([run])
    assert "No timeline" in page and "<svg" not in page


def test_two_runs_of_one_mode_get_different_colors(tmp_path: Path) -> None:
    paths = []
    for i in range(2):
        path = tmp_path / f"run{i}.json"
        path.write_text(json.dumps(make_journal("on", 400.0 + i, activations=1)))
        paths.append(path)
    runs = [load_report_run(path, i) for i, path in enumerate(paths)]
    render_html(runs)
    assert runs[0].color != runs[1].color


def test_score_is_deterministic_on_a_copy(journals: tuple[Path, Path]) -> None:
    journal = json.loads(journals[0].read_text())
    assert score_run(copy.deepcopy(journal)) == score_run(journal)


def test_the_readme_chart_is_drawn_from_the_committed_real_journals() -> None:
    """docs/report/flagship-p99-on-vs-off.svg is what `chaosemergence report --chart p99_ms`
    draws from the two journals beside it, whose series the recorder sampled in real runs."""
    folder = Path(__file__).resolve().parent.parent / "docs" / "report"
    paths = [folder / f"journal-validate-emergence-defenses-{mode}.json" for mode in ("on", "off")]
    runs = [load_report_run(path, i) for i, path in enumerate(paths)]
    assert [run.mode for run in runs] == ["on", "off"]
    assert all(len(run.samples) >= 30 for run in runs)
    assert [run.verdict for run in runs] == [True, True], [run.why for run in runs]
    assert standalone_chart(runs, "p99_ms") == (folder / "flagship-p99-on-vs-off.svg").read_text()
