"""`python -m chaosemergence.report`: the README's table from journal-<experiment>-<mode>.json."""

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

# Steady-state probes: two harm probes (what users see) and one mechanism ratio.
P99 = {"name": "p99-latency-ms", "range": [0, 1000], "func": "latency_percentile"}
RADIUS = {"name": "failure-radius", "range": [0, 10], "func": "measure_failure_radius"}
AMPLIFICATION = {"name": "retry-amplification", "range": [0, 1.1], "func": "retry_amplification"}
FIGURES = {
    "p99_ms": 340.0,
    "failure_radius_pct": 0.0,
    "degraded_pct": 7.6,
    "retry_amplification": 0.48,
    "coalescing_ratio": None,
    "cache_hit_rate": 0.59,
    "goodput_rps": 51.5,
}
ACTIVATION_ERROR = [
    "Traceback (most recent call last):\n",
    '  File "/work/main/probes/__init__.py", line 190, in check_defense_activation\n',
    "chaoslib.exceptions.ActivityFailed: check_defense_activation: retry_budget did not "
    "activate since 1795980237 (activated: circuit_breaker)\n",
    "\nDuring handling of the above exception, another exception occurred:\n\n",
    "chaoslib.exceptions.ActivityFailed: chaoslib.exceptions.ActivityFailed: "
    "check_defense_activation: retry_budget did not activate since 1795980237 "
    "(activated: circuit_breaker)\n",
]


def probe_run(spec: dict[str, Any], output: Any, status: str = "succeeded") -> dict[str, Any]:
    """A probe's entry in a journal's steady state, as chaoslib writes it."""
    low, high = spec["range"]
    run: dict[str, Any] = {
        "activity": {
            "name": spec["name"],
            "type": "probe",
            "tolerance": {"type": "range", "range": spec["range"]},
            "provider": {
                "type": "python",
                "module": "chaosemergence.probes",
                "func": spec["func"],
            },
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


def method_probe(
    name: str,
    func: str,
    output: Any,
    *,
    arguments: dict[str, Any] | None = None,
    exception: list[str] | None = None,
) -> dict[str, Any]:
    """A probe's entry in a journal's `run` (the method), as chaoslib writes it."""
    entry: dict[str, Any] = {
        "activity": {
            "type": "probe",
            "name": name,
            "provider": {
                "type": "python",
                "module": "chaosemergence.probes",
                "func": func,
                "arguments": arguments or {},
            },
        },
        "output": None if exception else output,
        "status": "failed" if exception else "succeeded",
    }
    if exception:
        entry["exception"] = exception
    return entry


def activation(defenses: list[str] | None, *, failed: bool = False) -> dict[str, Any]:
    return method_probe(
        "defenses-activated",
        "check_defense_activation",
        True,
        arguments={"defenses": defenses},
        exception=ACTIVATION_ERROR if failed else None,
    )


def action(name: str = "inject-timeouts") -> dict[str, Any]:
    return {"activity": {"name": name, "type": "action"}, "status": "succeeded", "output": None}


def state(*probes: dict[str, Any]) -> dict[str, Any]:
    return {"steady_state_met": all(p["tolerance_met"] for p in probes), "probes": list(probes)}


def stopped(*probes: dict[str, Any]) -> dict[str, Any]:
    """A hypothesis that stopped at its last (failing) probe, as chaoslib's does."""
    return {"steady_state_met": False, "probes": list(probes)}


def journal(
    specs: list[dict[str, Any]],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    method: list[dict[str, Any]] | None = None,
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
                        "provider": {"type": "python", "module": "m", "func": s["func"]},
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
        "run": method or [],
        "rollbacks": [],
        "end": start,
        "duration": 33.2,
    }


def write(
    results: Path,
    experiment: str,
    mode: str,
    data: dict[str, Any],
    profile: str = "ci",
    mode_key: str = "mode",
) -> None:
    """A journal and its run-<experiment>-<mode>.json, as .ci/run-experiment.sh writes them."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"journal-{experiment}-{mode}.json").write_text(json.dumps(data))
    meta = {"experiment": experiment, "profile": profile, mode_key: mode, "chaos_exit": 0}
    (results / f"run-{experiment}-{mode}.json").write_text(json.dumps(meta))


def cells(line: str) -> list[str]:
    """The cells of one markdown table row."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return line[2:-2].split(" | ")


def row(table: str, experiment: str) -> list[str]:
    """The cells of the table's row for `experiment`."""
    (line,) = [line for line in table.splitlines() if line.startswith(f"| `{experiment}` |")]
    return cells(line)


SPECS = [P99, RADIUS]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """retry-storm run three ways; herd with a failed activation; flagship only defended."""
    folder = tmp_path / "results"
    # retry-storm: on holds and its defenses activated; off breaks p99 (harm), so the
    # hypothesis stops there; cut holds.
    on = journal(
        SPECS,
        state(probe_run(P99, 169.0), probe_run(RADIUS, 0.0)),
        state(probe_run(P99, 340.4), probe_run(RADIUS, 0.0)),
        method=[
            action(),
            method_probe("retry-amplification", "retry_amplification", 0.48),
            activation(["circuit_breaker", "retry_budget"]),
            method_probe("figures", "emergence_figures", FIGURES),
        ],
    )
    off = journal(
        SPECS,
        state(probe_run(P99, 173.0), probe_run(RADIUS, 0.0)),
        stopped(probe_run(P99, 1979.06)),
        deviated=True,
        start="2026-11-28T05:10:00+00:00",
        method=[
            action(),
            method_probe("retry-amplification", "retry_amplification", 4.992),
            method_probe("figures", "emergence_figures", {**FIGURES, "retry_amplification": 5.0}),
        ],
    )
    cut = journal(
        SPECS,
        state(probe_run(P99, 170.0), probe_run(RADIUS, 0.0)),
        state(probe_run(P99, 244.5), probe_run(RADIUS, 0.0)),
        method=[action(), method_probe("retry-amplification", "retry_amplification", 0.81)],
    )
    write(folder, "retry-storm", "on", on, profile="weekly")
    write(folder, "retry-storm", "off", off)
    write(folder, "retry-storm", "cut", cut, mode_key="defenses")  # the key's old name
    # thundering-herd: the defended run held but a named defense did not activate; the
    # negative control deviated on a mechanism ratio only (no harm); no cut run.
    herd_specs = [AMPLIFICATION, P99]
    herd_on = journal(
        herd_specs,
        state(probe_run(AMPLIFICATION, 1.0), probe_run(P99, 100.0)),
        state(probe_run(AMPLIFICATION, 1.0), probe_run(P99, 120.0)),
        method=[
            method_probe(
                "spiral",
                "memory_spiral",
                {"cell": 0, "peak_gc_pause_ms": 12.0, "peak_in_flight": 4.0, "samples": []},
            ),
            activation(["circuit_breaker", "retry_budget"], failed=True),
        ],
    )
    herd_off = journal(
        herd_specs,
        state(probe_run(AMPLIFICATION, 1.0), probe_run(P99, 100.0)),
        stopped(probe_run(AMPLIFICATION, 2.4567)),
        deviated=True,
        method=[
            method_probe(
                "spiral",
                "memory_spiral",
                {"cell": 0, "peak_gc_pause_ms": 480.0, "peak_in_flight": 61.0, "samples": []},
            ),
        ],
    )
    write(folder, "thundering-herd", "on", herd_on)
    write(folder, "thundering-herd", "off", herd_off)
    flagship = journal(
        [P99, RADIUS],
        state(probe_run(P99, 150), probe_run(RADIUS, 0.0)),
        state(probe_run(P99, 420.0), probe_run(RADIUS, 0.0)),
        method=[method_probe("figures", "emergence_figures", FIGURES)],
    )
    write(folder, "validate-emergence-defenses", "on", flagship)
    # Files the report must ignore.
    (folder / "journal.json").write_text("{}")
    (folder / "journal-notes.json").write_text("{}")
    (folder / "chaostoolkit-retry-storm-on.log").write_text("log")
    return folder


def test_summary_header(results: Path) -> None:
    lines = render_summary(load_runs(results)).splitlines()
    assert cells(lines[0]) == [
        "Experiment",
        "On: held, activated",
        "Off: harm",
        "Cut: held",
        "Harm probe (after): off / on / cut",
        "Mechanism: off / on",
        "Defenses activated (on)",
    ]
    assert lines[1] == "|---|---|---|---|---|---|---|"
    assert [cells(line)[0] for line in lines[2:5]] == [
        "`retry-storm`",
        "`thundering-herd`",
        "`validate-emergence-defenses`",
    ]


def test_summary_three_verdicts_that_hold(results: Path) -> None:
    """Off deviated on p99 (harm), cut held, on held and its defenses activated."""
    storm = row(render_summary(load_runs(results)), "retry-storm")
    assert storm[1:4] == ["✓", "✓", "✓"]
    # The probe the negative control broke, after the method, off / on / cut.
    assert storm[4] == "`p99-latency-ms`: **1979** ✗ / 340 / 244"
    # The method's mechanism probe, off / on (figures only when there is none).
    assert storm[5] == "`retry-amplification`: 4.99 / 0.48"
    assert storm[6] == "circuit_breaker, retry_budget"


def test_summary_verdicts_that_fail_and_a_missing_mode(results: Path) -> None:
    """A failed activation, a deviation on a mechanism ratio only, and no cut run."""
    herd = row(render_summary(load_runs(results)), "thundering-herd")
    assert herd[1].startswith("✗ ")  # with judge's reason
    assert herd[2].startswith("✗ no harm probe failed after the method")
    assert "retry-amplification" in herd[2]
    assert herd[3] == "not run"
    # The off run broke no harm probe: the hypothesis' first harm probe, not measured off.
    assert herd[4] == "`p99-latency-ms`: — / 120 / not run"
    # A dict output shows its mechanism entries, not the whole structure.
    assert herd[5] == ("`spiral` peak_gc_pause_ms: 480 / 12<br>`spiral` peak_in_flight: 61 / 4")
    # Which named defense did not activate, from the check's own message.
    assert herd[6] == "circuit_breaker<br>✗ not activated: retry_budget"


def test_summary_only_the_defended_run(results: Path) -> None:
    flagship = row(render_summary(load_runs(results)), "validate-emergence-defenses")
    assert flagship[1] == "✗ no check_defense_activation in the method: activation unproven"
    assert flagship[2:4] == ["not run", "not run"]
    assert flagship[4] == "`p99-latency-ms`: not run / 420 / not run"
    # No mechanism probe in the method: the figures' amplification stands in.
    assert flagship[5] == "`figures` retry_amplification: not run / 0.48"
    assert flagship[6] == "— (no activation check)"


def test_summary_footer(results: Path) -> None:
    footer = render_summary(load_runs(results)).splitlines()[-1]
    assert footer.startswith(
        "Profile ci, weekly; runs from 2026-11-28 04:52 UTC to 2026-11-28 05:10 UTC."
    )
    assert "`--var defenses=off --var loop=cut`" in footer


def test_activation_named_all_and_unexplained_failures(tmp_path: Path) -> None:
    """`defenses: null` asks for every defense; a failure without names says the check failed."""
    held = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    held["run"] = [activation(None)]
    write(tmp_path, "a", "on", held)
    broken = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    broken["run"] = [
        method_probe(
            "defenses-activated",
            "check_defense_activation",
            None,
            arguments={"defenses": ["request_coalescing"]},
            exception=["chaoslib.exceptions.ActivityFailed: read defense events: timed out\n"],
        )
    ]
    write(tmp_path, "b", "on", broken)
    table = render_summary(load_runs(tmp_path))
    assert row(table, "a")[1] == "✓" and row(table, "a")[6] == "all"
    assert row(table, "b")[1].startswith("✗ ")
    assert row(table, "b")[6] == "✗ activation check failed"


def test_figures_come_from_the_journal(tmp_path: Path) -> None:
    """read_run keeps the raw output of the `figures` method probe."""
    data = journal([P99], state(probe_run(P99, 100)), state(probe_run(P99, 120)))
    data["run"] = [method_probe("figures", "emergence_figures", {"p99_ms": 120.0, "x": 0.93})]
    write(tmp_path, "thundering-herd", "on", data)
    run = load_runs(tmp_path)["thundering-herd"]["on"]
    assert run.figures == {"p99_ms": 120.0, "x": 0.93}
    lines = render_markdown({"thundering-herd": {"on": run}}).splitlines()
    # One column per figure, not the dict squeezed into one cell.
    assert cells(lines[0])[-2:] == ["`figures` p99_ms", "`figures` x"]
    assert cells(lines[2])[-2:] == ["on: 120", "on: 0.93"]


def test_markdown_every_probe_of_every_mode(results: Path) -> None:
    runs = load_runs(results)
    assert list(runs) == ["retry-storm", "thundering-herd", "validate-emergence-defenses"]
    assert list(runs["retry-storm"]) == ["on", "off", "cut"]
    lines = render_markdown(runs).splitlines()
    header = cells(lines[0])
    # One column per probe found in any journal, in order of first appearance.
    assert header[:7] == [
        "Experiment",
        "Defenses on",
        "Defenses off",
        "Loop cut",
        "`p99-latency-ms`",
        "`failure-radius`",
        "`retry-amplification`",
    ]
    assert header[7:10] == [
        "`retry-amplification` (method)",
        "`defenses-activated` (method)",
        "`spiral` (method)",
    ]
    storm = row("\n".join(lines), "retry-storm")
    assert storm[1] == "completed, not deviated<br>weekly, 2026-11-28 04:52 UTC<br>on: ✓"
    assert storm[2] == "completed, deviated<br>ci, 2026-11-28 05:10 UTC<br>off: ✓"
    # The run-*.json beside the cut journal still says `defenses`: its profile is read.
    assert storm[3] == "completed, not deviated<br>ci, 2026-11-28 04:52 UTC<br>cut: ✓"
    assert storm[4] == "on: 169 → 340<br>off: 173 → **1979** ✗<br>cut: 170 → 244"
    assert storm[5] == "on: 0 → 0<br>off: 0 → —<br>cut: 0 → 0"
    assert storm[6] == "—"
    assert storm[7] == "on: 0.48<br>off: 4.99<br>cut: 0.81"
    herd = row("\n".join(lines), "thundering-herd")
    assert herd[1].startswith("completed, not deviated, failed: defenses-activated<br>")
    assert "<br>on: ✗ " in herd[1]
    assert herd[3] == "not run"
    # The failure's message without exception classes or the function's name, cut short.
    assert herd[8] == (
        "on: error: retry_budget did not activate since 1795980237 (activated: circuit_br…"
    )
    flagship = row("\n".join(lines), "validate-emergence-defenses")
    assert flagship[2:4] == ["not run", "not run"]
    assert flagship[4] == "on: 150 → 420"
    assert len(storm) == len(herd) == len(flagship) == len(header)
    assert "- `p99-latency-ms`: 0 .. 1000" in lines
    assert "- `retry-amplification`: 0 .. 1.1" in lines


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
    cols = row(table, "death-spiral")
    assert cols[1].startswith("failed, not deviated, hypothesis not met before")
    assert cols[4] == "on: **error (failed)** ✗ → —"
    assert cols[5] == "on: — → —"


def test_before_hypothesis_missed_is_not_a_pass(tmp_path: Path) -> None:
    """chaos says completed and not deviated when the *before* hypothesis fails: say so."""
    missed = journal([P99], stopped(probe_run(P99, 2500.0)), None)
    write(tmp_path, "cascade", "cut", missed)
    cols = row(render_markdown(load_runs(tmp_path)), "cascade")
    assert cols[3].startswith("completed, not deviated, hypothesis not met before")
    assert cols[3].endswith("cut: ✗ did not hold with the loop cut")
    assert cols[4] == "cut: **2500** ✗ → —"
    assert row(render_summary(load_runs(tmp_path)), "cascade")[3] == (
        "✗ did not hold with the loop cut"
    )


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
    line = render_markdown(load_runs(tmp_path)).splitlines()[2]
    assert "a\\|b" in line
    assert line.count(" | ") == 4


def test_experiment_names_with_dashes(tmp_path: Path) -> None:
    """The mode is the last dash-separated part; everything before it is the name."""
    data = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    write(tmp_path, "switch-on-off", "cut", data)
    runs = load_runs(tmp_path)
    assert list(runs) == ["switch-on-off"]
    assert list(runs["switch-on-off"]) == ["cut"]


def test_profile_of_another_run_is_not_taken(tmp_path: Path) -> None:
    """A run-*.json that names another mode is not this journal's: profile unknown."""
    data = journal([P99], state(probe_run(P99, 5)), state(probe_run(P99, 6)))
    write(tmp_path, "x", "on", data, profile="weekly")
    meta = tmp_path / "run-x-on.json"
    meta.write_text(json.dumps({"profile": "weekly", "mode": "off"}))
    assert load_runs(tmp_path)["x"]["on"].profile is None


def test_text_output(results: Path) -> None:
    text = render_text(load_runs(results))
    assert "retry-storm\n  on   ✓  completed, not deviated  (weekly, 2026-11-28 04:52 UTC)" in text
    assert "    p99-latency-ms       173 → 1979 ✗" in text
    assert "  cut  ✓  completed, not deviated  (ci, " in text
    assert "    retry-amplification  0.81 (method)" in text
    assert "thundering-herd" in text and "  cut  not run" in text
    assert "validate-emergence-defenses" in text and "  off  not run" in text


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
        [sys.executable, "-m", "chaosemergence.report", str(results), "--summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.startswith("| Experiment | On: held, activated | Off: harm | Cut: held |")
    assert "| `retry-storm` | ✓ | ✓ | ✓ |" in out.stdout


def test_journals_written_by_chaoslib(tmp_path: Path) -> None:
    """Real journals from chaoslib's own runner, held and deviated, in-process (no system)."""
    target, big = tmp_path / "target", tmp_path / "big"
    big.write_text("a" * 5000)

    def experiment(grow: bool) -> dict[str, Any]:
        target.write_text("abc")
        # Off grows the file past the tolerance; on and cut copy it aside and change nothing.
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
                },
                {
                    "type": "probe",
                    "name": "size-now",
                    "provider": {
                        "type": "python",
                        "module": "os.path",
                        "func": "getsize",
                        "arguments": {"filename": str(target)},
                    },
                },
            ],
        }

    results = tmp_path / "results"
    results.mkdir()
    for mode, grow in (("on", False), ("off", True), ("cut", False)):
        data = run_experiment(experiment(grow))
        (results / f"journal-file-size-{mode}.json").write_text(json.dumps(data, default=str))
    lines = render_markdown(load_runs(results)).splitlines()
    assert cells(lines[0]) == [
        "Experiment",
        "Defenses on",
        "Defenses off",
        "Loop cut",
        "`size-bytes`",
        "`exists`",
        "`size-now` (method)",
    ]
    cols = cells(lines[2])
    assert cols[1].startswith("completed, not deviated<br>profile ?, ")
    assert cols[2].startswith("completed, deviated<br>")
    assert cols[3].endswith("<br>cut: ✓")
    assert cols[4] == "on: 3 → 3<br>off: 3 → **5000** ✗<br>cut: 3 → 3"
    assert cols[5] == "on: true → true<br>off: true → —<br>cut: true → true"
    assert cols[6] == "on: 3<br>off: 5000<br>cut: 3"
    assert "- `exists`: = true" in lines
    summary = cells(render_summary(load_runs(results)).splitlines()[2])
    # `getsize` is no harm probe and the method has no activation check: both verdicts fail.
    assert summary[1] == "✗ no check_defense_activation in the method: activation unproven"
    assert summary[2].startswith("✗ no harm probe failed after the method")
    assert summary[3] == "✓"
    assert summary[5] == "`size-now`: 5000 / 3"
