"""Summarize experiment journals: `python -m chaosemergence.report RESULTS_DIR [--markdown]`.

Reads the journals that `.ci/run-experiment.sh` writes, `journal-<experiment>-<on|off>.json`
(plus the `run-<experiment>-<on|off>.json` beside each, which names the profile), and prints
one row per experiment: for each direction (defenses on, defenses off) the run's status, whether
it deviated, its profile and date, and, in one column per steady-state probe found in the
journals, the probe's output before -> after the method (then one column per probe run in a
method, e.g. "did the breaker activate"). Outputs outside the hypothesis' tolerance are marked.
`--markdown` prints every probe as one wide table (docs/results.md); `--summary` prints the
README's table: the probe each negative control broke and the headline figures on vs off.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chaosemergence.verdict import summarize

__all__ = [
    "DIRECTIONS",
    "Run",
    "format_value",
    "load_runs",
    "main",
    "render_markdown",
    "render_summary",
    "render_text",
]

DIRECTIONS = ("on", "off")
JOURNAL_NAME = re.compile(r"^journal-(?P<experiment>.+)-(?P<defenses>on|off)\.json$")
MISSING = "—"
OUT_OF_TOLERANCE = "✗"
FIGURES_PROBE = "figures"
# emergence_figures keys the summary shows, with their column titles.
SUMMARY_FIGURES = {
    "p99_ms": "p99 ms",
    "failure_radius_pct": "failure radius %",
    "retry_amplification": "retry amplification",
    "cache_hit_rate": "hit rate",
}


@dataclass
class ProbeResult:
    """One probe's outputs in the before and after hypotheses (None: not run)."""

    before: str | None = None
    after: str | None = None
    before_met: bool | None = None
    after_met: bool | None = None


@dataclass
class Run:
    """One journal: an experiment run in one direction."""

    experiment: str
    defenses: str
    path: Path
    status: str
    deviated: bool
    ok: bool
    started: str
    profile: str | None
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    tolerances: dict[str, str] = field(default_factory=dict)
    # Probes in the method (e.g. "did the breaker activate"): one output each, no tolerance.
    method_probes: dict[str, str] = field(default_factory=dict)
    # The `figures` method probe's raw output (emergence_figures), when the run has one.
    figures: dict[str, Any] = field(default_factory=dict)

    def pattern_probe(self) -> str | None:
        """The first probe outside its tolerance after the method (what a deviation names)."""
        for name, result in self.probes.items():
            if result.after_met is False:
                return name
        return None


def format_value(value: Any) -> str:
    """A probe output, short: numbers rounded to what a table needs, structures as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        magnitude = abs(value)
        digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 0.1 else 3
        text = f"{value:.{digits}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, str):
        return value if len(value) <= 40 else value[:39] + "…"
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


def _format_tolerance(tolerance: Any) -> str:
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        if kind == "range" and isinstance(tolerance.get("range"), list):
            low, high = tolerance["range"]
            return f"{low} .. {high}"
        if kind:
            detail = {k: v for k, v in tolerance.items() if k not in ("type", "target")}
            return f"{kind} {json.dumps(detail, sort_keys=True, default=str)}"
    if isinstance(tolerance, bool | int | float | str):
        return f"= {format_value(tolerance)}"
    return json.dumps(tolerance, default=str)


def _probe_output(probe: dict[str, Any]) -> str:
    if probe.get("status") != "succeeded":
        return f"error ({probe.get('status', 'no status')})"
    return format_value(probe.get("output"))


def _read_profile(journal_path: Path, experiment: str, defenses: str) -> str | None:
    meta = journal_path.with_name(f"run-{experiment}-{defenses}.json")
    try:
        profile = json.loads(meta.read_text()).get("profile")
    except (OSError, ValueError, AttributeError):
        return None
    return str(profile) if profile else None


def _started(journal: dict[str, Any]) -> str:
    start = journal.get("start")
    if not isinstance(start, str):
        return MISSING
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        return start
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.utcoffset() is not None else "")


def read_run(path: Path) -> Run:
    """One journal file named `journal-<experiment>-<on|off>.json`."""
    match = JOURNAL_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name}: not named journal-<experiment>-<on|off>.json")
    experiment, defenses = match["experiment"], match["defenses"]
    journal: dict[str, Any] = json.loads(path.read_text())
    ok, _ = summarize(journal)
    run = Run(
        experiment=experiment,
        defenses=defenses,
        path=path,
        status=str(journal.get("status")),
        deviated=bool(journal.get("deviated")),
        ok=ok,
        started=_started(journal),
        profile=_read_profile(path, experiment, defenses),
    )
    hypothesis = (journal.get("experiment") or {}).get("steady-state-hypothesis") or {}
    for probe in hypothesis.get("probes", []):
        name = probe.get("name")
        if name:
            run.probes.setdefault(name, ProbeResult())
            if "tolerance" in probe:
                run.tolerances[name] = _format_tolerance(probe["tolerance"])
    states = journal.get("steady_states") or {}
    for phase in ("before", "after"):
        for probe in (states.get(phase) or {}).get("probes", []):
            name = probe["activity"]["name"]
            result = run.probes.setdefault(name, ProbeResult())
            setattr(result, phase, _probe_output(probe))
            setattr(result, f"{phase}_met", probe.get("tolerance_met"))
    for activity in journal.get("run") or []:
        if activity.get("activity", {}).get("type") == "probe":
            name = activity["activity"]["name"]
            run.method_probes[name] = _probe_output(activity)
            output = activity.get("output")
            if name == FIGURES_PROBE and isinstance(output, dict):
                run.figures = output
    return run


def load_runs(results: Path) -> dict[str, dict[str, Run]]:
    """experiment -> direction -> run, for every journal in the folder, experiments sorted."""
    runs: dict[str, dict[str, Run]] = {}
    for path in sorted(results.glob("journal-*.json")):
        if JOURNAL_NAME.match(path.name):
            run = read_run(path)
            runs.setdefault(run.experiment, {})[run.defenses] = run
    return dict(sorted(runs.items()))


def probe_names(runs: dict[str, dict[str, Run]]) -> list[str]:
    """Every probe name in the journals, in order of first appearance."""
    names: dict[str, None] = {}
    for by_direction in runs.values():
        for defenses in DIRECTIONS:
            if defenses in by_direction:
                names.update(dict.fromkeys(by_direction[defenses].probes))
    return list(names)


def method_probe_names(runs: dict[str, dict[str, Run]]) -> list[str]:
    """Every probe run in a method, in order of first appearance."""
    names: dict[str, None] = {}
    for by_direction in runs.values():
        for defenses in DIRECTIONS:
            if defenses in by_direction:
                names.update(dict.fromkeys(by_direction[defenses].method_probes))
    return list(names)


def _value(text: str | None, met: bool | None, markdown: bool) -> str:
    if text is None:
        return MISSING
    if met is False:
        return f"**{text}** {OUT_OF_TOLERANCE}" if markdown else f"{text} {OUT_OF_TOLERANCE}"
    return text


def _transition(result: ProbeResult, markdown: bool) -> str:
    before = _value(result.before, result.before_met, markdown)
    after = _value(result.after, result.after_met, markdown)
    return f"{before} → {after}"


def _run_summary(run: Run | None) -> str:
    if run is None:
        return "not run"
    parts = [run.status, "deviated" if run.deviated else "not deviated"]
    if not run.ok and not run.deviated and run.status == "completed":
        parts.append("hypothesis not met")
    return ", ".join(parts)


def _run_when(run: Run) -> str:
    return f"{run.profile or 'profile ?'}, {run.started}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(runs: dict[str, dict[str, Run]]) -> str:
    """The README table: one row per experiment, both directions in each cell."""
    names = probe_names(runs)
    method = method_probe_names(runs)
    header = [
        "Experiment",
        "Defenses on",
        "Defenses off",
        *[f"`{name}`" for name in names],
        *[f"`{name}` (method)" for name in method],
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for experiment, by_direction in runs.items():
        cells = [f"`{experiment}`"]
        for defenses in DIRECTIONS:
            run = by_direction.get(defenses)
            cell = _run_summary(run)
            if run is not None:
                cell = f"{cell}<br>{_run_when(run)}"
            cells.append(cell)
        for name in names:
            parts = [
                f"{defenses}: {_transition(by_direction[defenses].probes[name], markdown=True)}"
                for defenses in DIRECTIONS
                if defenses in by_direction and name in by_direction[defenses].probes
            ]
            cells.append("<br>".join(parts) if parts else MISSING)
        for name in method:
            parts = [
                f"{defenses}: {by_direction[defenses].method_probes[name]}"
                for defenses in DIRECTIONS
                if defenses in by_direction and name in by_direction[defenses].method_probes
            ]
            cells.append("<br>".join(parts) if parts else MISSING)
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    lines += [
        "",
        f"Probe cells: steady-state output before → after the method; {OUT_OF_TOLERANCE} marks "
        "an output outside the hypothesis' tolerance; "
        f"{MISSING} means the probe did not run (a hypothesis stops at its first failing probe). "
        "Columns marked (method) are probes of the method: one output per run.",
    ]
    tolerances = _tolerance_lines(runs, names)
    if tolerances:
        lines += ["", "Tolerances:", "", *tolerances]
    return "\n".join(lines) + "\n"


def _figure(run: Run | None, key: str) -> str:
    if run is None or key not in run.figures:
        return MISSING
    return format_value(run.figures[key])


def render_summary(runs: dict[str, dict[str, Run]]) -> str:
    """The README's table: per experiment, the probe the negative control broke and the
    headline figures (`emergence_figures`), defenses on vs off."""
    header = [
        "Experiment",
        "Defenses on",
        "Defenses off",
        "Pattern probe (after): on / off",
        *[f"{title}: on / off" for title in SUMMARY_FIGURES.values()],
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for experiment, by_direction in runs.items():
        on, off = by_direction.get("on"), by_direction.get("off")
        cells = [f"`{experiment}`", _run_summary(on), _run_summary(off)]
        pattern = off.pattern_probe() if off is not None else None
        if pattern is None:
            cells.append(MISSING)
        else:
            values = [
                _value(run.probes[pattern].after, run.probes[pattern].after_met, markdown=True)
                if run is not None and pattern in run.probes
                else MISSING
                for run in (on, off)
            ]
            cells.append(f"`{pattern}`: {values[0]} / {values[1]}")
        for key in SUMMARY_FIGURES:
            values = [_figure(run, key) for run in (on, off)]
            cells.append(" / ".join(values))
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    dates = sorted({run.started for by in runs.values() for run in by.values()})
    profiles = sorted({run.profile or "profile ?" for by in runs.values() for run in by.values()})
    lines += [
        "",
        f"Profile {', '.join(profiles)}; runs from {dates[0]} to {dates[-1]}. The pattern probe "
        "is the first steady-state probe the negative control broke; figures are the "
        f"`{FIGURES_PROBE}` probe (`emergence_figures`) at the end of each run's method.",
    ]
    return "\n".join(lines) + "\n"


def _tolerance_lines(runs: dict[str, dict[str, Run]], names: Iterable[str]) -> list[str]:
    lines = []
    for name in names:
        seen: dict[str, list[str]] = {}
        for experiment, by_direction in runs.items():
            for run in by_direction.values():
                if name in run.tolerances:
                    users = seen.setdefault(run.tolerances[name], [])
                    if experiment not in users:
                        users.append(experiment)
        if len(seen) == 1:
            lines.append(f"- `{name}`: {_escape(next(iter(seen)))}")
        elif seen:
            detail = "; ".join(f"{tol} ({', '.join(exps)})" for tol, exps in seen.items())
            lines.append(f"- `{name}`: {_escape(detail)}")
    return lines


def render_text(runs: dict[str, dict[str, Run]]) -> str:
    """For terminals and CI logs: one block per experiment."""
    lines: list[str] = []
    for experiment, by_direction in runs.items():
        lines.append(experiment)
        for defenses in DIRECTIONS:
            run = by_direction.get(defenses)
            if run is None:
                lines.append(f"  defenses {defenses:<3}  not run")
                continue
            lines.append(
                f"  defenses {defenses:<3}  {_run_summary(run)}  ({_run_when(run)})  {run.path}"
            )
            width = max((len(name) for name in [*run.probes, *run.method_probes]), default=0)
            for name, result in run.probes.items():
                lines.append(f"    {name:<{width}}  {_transition(result, markdown=False)}")
            for name, output in run.method_probes.items():
                lines.append(f"    {name:<{width}}  {output} (method)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaosemergence.report",
        description="Summarize journal-<experiment>-<on|off>.json files from a results folder.",
    )
    parser.add_argument("results", nargs="?", default="results", type=Path)
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--markdown", action="store_true", help="print every probe as a markdown table"
    )
    output.add_argument(
        "--summary",
        action="store_true",
        help="print the README's markdown table: pattern probe and headline figures",
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"no such folder: {args.results}", file=sys.stderr)
        return 2
    runs = load_runs(args.results)
    if not runs:
        print(
            f"no journal-<experiment>-<on|off>.json in {args.results}: "
            "run .ci/run-experiment.sh first",
            file=sys.stderr,
        )
        return 1
    if args.summary:
        sys.stdout.write(render_summary(runs))
    else:
        sys.stdout.write(render_markdown(runs) if args.markdown else render_text(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
