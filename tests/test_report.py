"""`python -m chaosemergence.report`: the README's table from journal-<experiment>-<on|off>.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chaoslib.experiment import run_experiment

from chaosemergence.report import (
    format_value,
    load_runs,
    main,
    render_markdown,
    render_summary,
    render_text,
)

ROOT = Path(__file__).resolve().parent.parent

P99 = {"name": "latency-remains-bounded", "range": [0, 1000]}
RADIUS = {"name": "no-cascade-failures", "range": [0, 10]}
AMPLIFICATION = {"name": "retry-amplification-bounded", "range": [0, 1.1]}


def probe_run(spec: dict[str, Any], output: Any, status: str = "succeeded") -> dict[str, Any]:
    """A probe's entry in a journal's steady state, as chaoslib writes it."""
    low, high = spec["range"]
    run: dict[str, Any] = {
        "activity": {
            "name": spec["name"],
            "type": "probe",
            "tolerance": {"type": "range", "range": spec["range"]},
            "provider": {"type": "python", "module": "chaosemergence.probes", "func": "f"},
        },
        "start": "2026-11-28T04:53:10.145887+00:00",
        "status": status,
        "end": "2026-11-28T04:53:10.200439+00:00",
        "duration": 0.05,
    }
    if status == "succeeded":
        run["output"] = output
        met = isinstance(output, int | float) and low <= output <= high
        run["tolerance_met"] = met
    else:
        run["exception"] = ["Traceback...", "ActivityFailed: boom\n"]
        run["tolerance_met"] = False
    return run


def state(*probes: dict[str, Any]) -> dict[str, Any]:
    return {"steady_state_met": all(p["tolerance_met"] for p in probes), "probes": list(probes)}


def journal(
    specs: list[dict[str, Any]],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    status: str = "completed",
    deviated: bool = False,
    start: str = "2026-11-28T04:52:53.362268+00:00",
) -> dict[str, Any]:
    """A journal with chaoslib's top-level shape (see chaoslib.run.initialize_run_journal)."""
    return {
        "chaoslib-version": "1.45.1",
        "platform": "Linux",
        "node": "vm",
        "experiment": {
            "title": "t",
            "description": "d",
            "steady-state-hypothesis": {
                "title": "h",
                "probes": [
                    {
                        "type": "probe",
                        "name": s["name"],
                        "tolerance": {"type": "range", "range": s["range"]},
                        "provider": {"type": "python", "module": "m", "func": "f"},
                    }
                    for s in specs
                ],
            },
            "method": [],
        },
        "start": start,
        "status": status,
        "deviated": deviated,
        "steady_states": {"before": before, "after": after, "during": []},
        "run": [],
        "rollbacks": [],
        "end": start,
        "duration": 33.2,
    }


def write(
    results: Path, experiment: str, defenses: str, data: dict[str, Any], profile: str = "ci"
) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / f"journal-{experiment}-{defenses}.json").write_text(json.dumps(data))
    meta = {"experiment": experiment, "profile": profile, "defenses": defenses, "chaos_exit": 0}
    (results / f"run-{experiment}-{defenses}.json").write_text(json.dumps(meta))


def cells(line: str) -> list[str]:
    """The cells of one markdown table row."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return line[2:-2].split(" | ")


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two experiments: one with both directions, one with only its defended run."""
    folder = tmp_path / "results"
    specs = [AMPLIFICATION, P99]
    held = journal(
        specs,
        state(probe_run(AMPLIFICATION, 1.0), probe_run(P99, 188.125)),
        state(probe_run(AMPLIFICATION, 1.04), probe_run(P99, 577.5)),
    )
    # Off: the after hypothesis stops at its first failing probe, so p99 is never measured.
    storm = journal(
        specs,
        state(probe_run(AMPLIFICATION, 1.0), probe_run(P99, 190.0)),
        {"steady_state_met": False, "probes": [probe_run(AMPLIFICATION, 2.4567)]},
        deviated=True,
        start="2026-11-28T05:10:00+00:00",
    )
    for data, activated in ((held, True), (storm, False)):
        data["run"] = [
            {"activity": {"name": "inject-timeouts", "type": "action"}, "status": "succeeded"},
            {
                "activity": {"name": "breaker-activated", "type": "probe"},
                "status": "succeeded",
                "output": activated,
            },
        ]
    write(folder, "retry-storm", "on", held, profile="weekly")
    write(folder, "retry-storm", "off", storm)
    flagship = journal(
        [P99, RADIUS],
        state(probe_run(P99, 150), probe_run(RADIUS, 0.0)),
        state(probe_run(P99, 420.0), probe_run(RADIUS, 0.0)),
    )
    write(folder, "validate-emergence-defenses", "on", flagship)
    # Files the report must ignore.
    (folder / "journal.json").write_text("{}")
    (folder / "journal-notes.json").write_text("{}")
    (folder / "chaostoolkit-retry-storm-on.log").write_text("log")
    return folder


def test_rows_columns_and_cells(results: Path) -> None:
    runs = load_runs(results)
    assert list(runs) == ["retry-storm", "validate-emergence-defenses"]
    table = render_markdown(runs)
    lines = table.splitlines()
    # One column per probe found in any journal, in order of first appearance.
    assert lines[0] == (
        "| Experiment | Defenses on | Defenses off | `retry-amplification-bounded` "
        "| `latency-remains-bounded` | `no-cascade-failures` | `breaker-activated` (method) |"
    )
    assert lines[1] == "|---|---|---|---|---|---|---|"
    storm = cells(lines[2])
    assert storm[0] == "`retry-storm`"
    assert storm[1] == "completed, not deviated<br>weekly, 2026-11-28 04:52 UTC"
    assert storm[2] == "completed, deviated<br>ci, 2026-11-28 05:10 UTC"
    assert storm[3] == "on: 1 → 1.04<br>off: 1 → **2.46** ✗"
    assert storm[4] == "on: 188 → 578<br>off: 190 → —"
    assert storm[5] == "—"
    assert storm[6] == "on: true<br>off: false"
    flagship = cells(lines[3])
    assert flagship[2] == "not run"
    assert flagship[3] == "—"
    assert flagship[4] == "on: 150 → 420"
    assert flagship[5] == "on: 0 → 0"
    assert flagship[6] == "—"
    assert len(storm) == len(flagship) == len(cells(lines[0])) == 7
    assert "- `latency-remains-bounded`: 0 .. 1000" in lines
    assert "- `retry-amplification-bounded`: 0 .. 1.1" in lines


def test_summary_names_the_broken_probe_and_the_figures(results: Path) -> None:
    """The README's table: the probe the negative control broke, and figures on vs off."""
    runs = load_runs(results)
    figures = {"p99_ms": 536.25, "failure_radius_pct": 1.0, "retry_amplification": 0.54}
    runs["retry-storm"]["on"].figures = figures
    runs["retry-storm"]["off"].figures = {**figures, "p99_ms": 1964.0, "retry_amplification": 4.6}
    lines = render_summary(runs).splitlines()
    assert cells(lines[0])[:4] == [
        "Experiment",
        "Defenses on",
        "Defenses off",
        "Pattern probe (after): on / off",
    ]
    storm = cells(lines[2])
    assert storm[1:3] == ["completed, not deviated", "completed, deviated"]
    assert storm[3] == "`retry-amplification-bounded`: 1.04 / **2.46** ✗"
    assert storm[4:7] == ["536 / 1964", "1 / 1", "0.54 / 4.6"]
    assert storm[7] == "— / —"  # no hit rate in these figures
    flagship = cells(lines[3])
    assert flagship[2] == "not run" and flagship[3] == "—"
    assert (
        "Profile ci, weekly; runs from 2026-11-28 04:52 UTC to 2026-11-28 05:10 UTC." in (lines[-1])
    )


def test_figures_come_from_the_journal(tmp_path: Path) -> None:
    """read_run keeps the raw output of the `figures` method probe."""
    data = journal([P99], state(probe_run(P99, 100)), state(probe_run(P99, 120)))
    data["run"] = [
        {
            "activity": {"name": "figures", "type": "probe"},
            "status": "succeeded",
            "output": {"p99_ms": 120.0, "cache_hit_rate": 0.93},
        }
    ]
    write(tmp_path, "thundering-herd", "on", data)
    run = load_runs(tmp_path)["thundering-herd"]["on"]
    assert run.figures == {"p99_ms": 120.0, "cache_hit_rate": 0.93}
    assert cells(render_summary({"thundering-herd": {"on": run}}).splitlines()[2])[4:8] == [
        "120 / —",
        "— / —",
        "— / —",
        "0.93 / —",
    ]


def test_failed_probe_and_before_hypothesis(tmp_path: Path) -> None:
    """A probe that raised shows as an error; a failed before hypothesis leaves `after` empty."""
    failed = journal(
        [P99, RADIUS],
        {"steady_state_met": False, "probes": [probe_run(P99, None, status="failed")]},
        None,
        status="failed",
    )
    write(tmp_path, "death-spiral", "on", failed)
    table = render_markdown(load_runs(tmp_path))
    row = cells(table.splitlines()[2])
    assert row[1].startswith("failed, not deviated")
    assert row[3] == "on: **error (failed)** ✗ → —"
    assert row[4] == "on: — → —"


def test_before_hypothesis_missed_is_not_a_pass(tmp_path: Path) -> None:
    """chaos says completed and not deviated when the *before* hypothesis fails: say so."""
    missed = journal(
        [P99],
        {"steady_state_met": False, "probes": [probe_run(P99, 2500.0)]},
        None,
    )
    write(tmp_path, "cascade", "on", missed)
    row = cells(render_markdown(load_runs(tmp_path)).splitlines()[2])
    assert row[1].startswith("completed, not deviated, hypothesis not met")
    assert row[3] == "on: **2500** ✗ → —"


def test_values_are_short_and_cannot_break_the_table(tmp_path: Path) -> None:
    assert [format_value(v) for v in (0.0, 0.2345, 0.00123, 12.345, 1234.5, 7, True, None)] == [
        "0",
        "0.23",
        "0.001",
        "12.3",
        "1234",
        "7",
        "true",
        "null",
    ]
    assert format_value({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert len(format_value({"k": "x" * 200})) == 60
    piped = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    piped["steady_states"]["after"]["probes"][0]["output"] = "a|b"
    write(tmp_path, "x", "on", piped)
    row = render_markdown(load_runs(tmp_path)).splitlines()[2]
    assert "a\\|b" in row
    assert row.count(" | ") == 3


def test_experiment_names_with_dashes(tmp_path: Path) -> None:
    """The direction is the last dash-separated part; everything before it is the name."""
    data = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    write(tmp_path, "switch-on-off", "off", data)
    runs = load_runs(tmp_path)
    assert list(runs) == ["switch-on-off"]
    assert list(runs["switch-on-off"]) == ["off"]


def test_text_output(results: Path) -> None:
    text = render_text(load_runs(results))
    assert (
        "retry-storm\n  defenses on   completed, not deviated  (weekly, 2026-11-28 04:52 UTC)"
        in text
    )
    assert "    retry-amplification-bounded  1 → 2.46 ✗" in text
    assert "    breaker-activated            false (method)" in text
    assert "validate-emergence-defenses" in text and "defenses off  not run" in text


def test_cli(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(results), "--markdown"]) == 0
    assert capsys.readouterr().out == render_markdown(load_runs(results))
    assert main([str(results), "--summary"]) == 0
    assert capsys.readouterr().out == render_summary(load_runs(results))
    assert main([str(results)]) == 0
    assert capsys.readouterr().out == render_text(load_runs(results))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty)]) == 1
    assert "run .ci/run-experiment.sh first" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) == 2


def test_module_entry_point(results: Path) -> None:
    """The command docs/weekly.md, the Makefile and the workflow give, as a subprocess."""
    out = subprocess.run(
        [sys.executable, "-m", "chaosemergence.report", str(results), "--markdown"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("| Experiment | Defenses on | Defenses off |")


def test_journals_written_by_chaoslib(tmp_path: Path) -> None:
    """Real journals from chaoslib's own runner, held and deviated, in-process (no system)."""
    target, big = tmp_path / "target", tmp_path / "big"
    big.write_text("a" * 5000)

    def experiment(grow: bool) -> dict[str, Any]:
        target.write_text("abc")
        # Off grows the file past the tolerance; on copies it aside and changes nothing.
        copy = (
            {"src": str(big), "dst": str(target)}
            if grow
            else {
                "src": str(target),
                "dst": str(tmp_path / "copy"),
            }
        )
        return {
            "title": "file size stays small",
            "description": "a stand-in for an emergence experiment",
            "steady-state-hypothesis": {
                "title": "small",
                "probes": [
                    {
                        "type": "probe",
                        "name": "size-bytes",
                        "tolerance": {"type": "range", "range": [0, 100]},
                        "provider": {
                            "type": "python",
                            "module": "os.path",
                            "func": "getsize",
                            "arguments": {"filename": str(target)},
                        },
                    },
                    {
                        "type": "probe",
                        "name": "exists",
                        "tolerance": True,
                        "provider": {
                            "type": "python",
                            "module": "os.path",
                            "func": "exists",
                            "arguments": {"path": str(target)},
                        },
                    },
                ],
            },
            "method": [
                {
                    "type": "action",
                    "name": "grow" if grow else "keep",
                    "provider": {
                        "type": "python",
                        "module": "shutil",
                        "func": "copyfile",
                        "arguments": copy,
                    },
                }
            ],
        }

    results = tmp_path / "results"
    results.mkdir()
    for defenses, grow in (("on", False), ("off", True)):
        data = run_experiment(experiment(grow))
        (results / f"journal-file-size-{defenses}.json").write_text(json.dumps(data, default=str))
    lines = render_markdown(load_runs(results)).splitlines()
    assert lines[0] == "| Experiment | Defenses on | Defenses off | `size-bytes` | `exists` |"
    row = cells(lines[2])
    assert row[1].startswith("completed, not deviated<br>profile ?, ")
    assert row[2].startswith("completed, deviated<br>")
    assert row[3] == "on: 3 → 3<br>off: 3 → **5000** ✗"
    assert row[4] == "on: true → true<br>off: true → —"
    assert "- `exists`: = true" in lines
