"""Summarize experiment journals: `python -m chaosemergence.report RESULTS [--summary|--markdown]`.

Reads the journals that `.ci/run-experiment.sh` writes, `journal-<experiment>-<on|off|cut>.json`
(plus the `run-<experiment>-<mode>.json` beside each, which names the profile), one per mode of
the three verdicts (docs/experiments.md): defenses on, defenses off (the negative control), and
the loop cut (`--var loop=cut`, defenses off). Each run is judged by `chaosemergence.verdict.judge`
for its mode.

`--summary` prints the README's table: per experiment the three verdicts, the harm probe the
negative control broke (off / on / cut, after the method), the mechanism evidence (the method's
probes, off / on) and the defenses the defended run's activation check saw activate.
`--markdown` prints every probe, before -> after, of every mode as one wide table
(docs/results.md); without either, one block per experiment for terminals and CI logs.
A mode whose journal is absent shows as "not run".
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

from chaosemergence.verdict import HARM_PROBES, MODES, judge, summarize

__all__ = [
    "MODES",
    "Run",
    "format_value",
    "load_runs",
    "main",
    "read_run",
    "render_markdown",
    "render_summary",
    "render_text",
]

JOURNAL_NAME = re.compile(r"^journal-(?P<experiment>.+)-(?P<mode>on|off|cut)\.json$")
MISSING = "—"
NOT_RUN = "not run"
OUT_OF_TOLERANCE = "✗"
PASS, FAIL = "✓", "✗"
FIGURES_PROBE = "figures"
ACTIVATION_FUNC = "check_defense_activation"
FIGURES_FUNC = "emergence_figures"
# Method probes that are not mechanism evidence: the activation check and the headline figures.
NOT_MECHANISM = frozenset({ACTIVATION_FUNC, FIGURES_FUNC})
# For a mechanism probe that returns a dict, the entries the summary shows (others: its first
# few numbers).
MECHANISM_KEYS = {
    "memory_spiral": ("peak_gc_pause_ms", "peak_in_flight", "peak_usage_pct"),
}
# emergence_figures entries that are mechanism evidence, shown when a method has no
# mechanism probe of its own.
# (Not the coalescing ratio: computations / misses is 1 by definition without coalescing.)
FIGURES_MECHANISM = ("retry_amplification",)
DICT_ENTRIES = 3
# "chaoslib.exceptions.ActivityFailed: " (repeated when chaoslib re-raises): dropped from cells.
EXCEPTION_PREFIX = re.compile(r"^(?:[\w.]*(?:Error|Failed|Exception|Exit): )+")
# How check_defense_activation names the defenses that did not activate (probes/__init__.py).
NOT_ACTIVATED = re.compile(r"check_defense_activation: (?P<missing>[\w, ]+?) did not activate")


@dataclass
class ProbeResult:
    """One probe's outputs in the before and after hypotheses (None: not run)."""

    func: str = ""
    before: str | None = None
    after: str | None = None
    before_met: bool | None = None
    after_met: bool | None = None


@dataclass
class MethodProbe:
    """One probe run in the method: its function, arguments and output."""

    func: str
    arguments: dict[str, Any]
    succeeded: bool
    output: Any
    error: str | None = None

    @property
    def text(self) -> str:
        """The output, short; for a failure, its message without exception class or func."""
        if self.succeeded:
            return format_value(self.output)
        message = EXCEPTION_PREFIX.sub("", self.error or "")
        message = message.removeprefix(f"{self.func}: ") if self.func else message
        return "error: " + (message if len(message) <= 70 else message[:69] + "…")


@dataclass
class Activation:
    """What the defended run's activation checks say: the defenses named, and which did not act."""

    named: list[str]
    missing: list[str]
    failed: bool
    # The check succeeded but returned something falsy, or failed for a reason it did not name.
    unexplained: bool = False


@dataclass
class Run:
    """One journal: an experiment run in one mode (on, off, cut)."""

    experiment: str
    mode: str
    path: Path
    status: str
    deviated: bool
    ok: bool
    verdict: bool
    why: str
    started: str
    profile: str | None
    # steady_state_met of the hypothesis before and after the method (None: not checked).
    met_before: bool | None = None
    met_after: bool | None = None
    # Activities of the method that did not succeed.
    failed: list[str] = field(default_factory=list)
    probes: dict[str, ProbeResult] = field(default_factory=dict)
    tolerances: dict[str, str] = field(default_factory=dict)
    # Probes in the method (e.g. "did the breaker activate"): one output each, no tolerance.
    method: dict[str, MethodProbe] = field(default_factory=dict)
    # The `figures` method probe's raw output (emergence_figures), when the run has one.
    figures: dict[str, Any] = field(default_factory=dict)

    def broken_probe(self) -> str | None:
        """The probe outside its tolerance after the method (a hypothesis stops at the first)."""
        for name, result in self.probes.items():
            if result.after_met is False:
                return name
        return None

    def mechanism(self) -> dict[str, MethodProbe]:
        """The method's probes other than activation checks and figures."""
        return {n: p for n, p in self.method.items() if p.func not in NOT_MECHANISM}

    def activation(self) -> Activation | None:
        """The activation checks of the method, merged (None: the method has none)."""
        checks = [p for p in self.method.values() if p.func == ACTIVATION_FUNC]
        if not checks:
            return None
        named: list[str] = []
        missing: list[str] = []
        failed = unexplained = False
        for check in checks:
            defenses = check.arguments.get("defenses")
            names = (
                [str(d) for d in defenses]
                if isinstance(defenses, list)
                else ["all"]
                if defenses is None
                else [str(defenses)]
            )
            named += [n for n in names if n not in named]
            if check.succeeded and check.output:
                continue
            failed = True
            matches = list(NOT_ACTIVATED.finditer(check.error or ""))
            if not matches:
                unexplained = True
            else:
                said = matches[-1]["missing"]
                names = [n.strip() for n in said.split(",") if n.strip()]
                missing += [n for n in names if n not in missing]
        return Activation(named=named, missing=missing, failed=failed, unexplained=unexplained)


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


def _provider(activity: dict[str, Any]) -> dict[str, Any]:
    provider = activity.get("provider")
    return provider if isinstance(provider, dict) else {}


def _read_profile(journal_path: Path, experiment: str, mode: str) -> str | None:
    """The profile named by run-<experiment>-<mode>.json (its mode key was once `defenses`)."""
    meta_path = journal_path.with_name(f"run-{experiment}-{mode}.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    written_for = meta.get("mode", meta.get("defenses"))
    if written_for is not None and written_for != mode:
        return None  # not this journal's run
    profile = meta.get("profile")
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


def _error(activity_run: dict[str, Any]) -> str:
    """The last line of a failed activity's exception, else its status."""
    lines = [str(line).strip() for line in activity_run.get("exception") or [] if str(line).strip()]
    return lines[-1] if lines else str(activity_run.get("status", "no status"))


def read_run(path: Path) -> Run:
    """One journal file named `journal-<experiment>-<on|off|cut>.json`."""
    match = JOURNAL_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path.name}: not named journal-<experiment>-<on|off|cut>.json")
    experiment, mode = match["experiment"], match["mode"]
    journal: dict[str, Any] = json.loads(path.read_text())
    ok, _ = summarize(journal)
    verdict, why = judge(mode, journal)
    run = Run(
        experiment=experiment,
        mode=mode,
        path=path,
        status=str(journal.get("status")),
        deviated=bool(journal.get("deviated")),
        ok=ok,
        verdict=verdict,
        why=why,
        started=_started(journal),
        profile=_read_profile(path, experiment, mode),
    )
    states = journal.get("steady_states") or {}
    run.met_before = (states.get("before") or {}).get("steady_state_met")
    run.met_after = (states.get("after") or {}).get("steady_state_met")
    run.failed = [
        str((entry.get("activity") or {}).get("name"))
        for entry in journal.get("run") or []
        if entry.get("status") != "succeeded"
    ]
    hypothesis = (journal.get("experiment") or {}).get("steady-state-hypothesis") or {}
    for probe in hypothesis.get("probes", []):
        name = probe.get("name")
        if name:
            result = run.probes.setdefault(name, ProbeResult())
            result.func = str(_provider(probe).get("func", ""))
            if "tolerance" in probe:
                run.tolerances[name] = _format_tolerance(probe["tolerance"])
    for phase in ("before", "after"):
        for probe in (states.get(phase) or {}).get("probes", []):
            activity = probe["activity"]
            result = run.probes.setdefault(activity["name"], ProbeResult())
            result.func = result.func or str(_provider(activity).get("func", ""))
            setattr(result, phase, _probe_output(probe))
            setattr(result, f"{phase}_met", probe.get("tolerance_met"))
    for entry in journal.get("run") or []:
        activity = entry.get("activity") or {}
        if activity.get("type") != "probe":
            continue
        provider = _provider(activity)
        arguments = provider.get("arguments")
        succeeded = entry.get("status") == "succeeded"
        probe = MethodProbe(
            func=str(provider.get("func", "")),
            arguments=arguments if isinstance(arguments, dict) else {},
            succeeded=succeeded,
            output=entry.get("output"),
            error=None if succeeded else _error(entry),
        )
        run.method[activity["name"]] = probe
        if activity["name"] == FIGURES_PROBE and isinstance(probe.output, dict):
            run.figures = probe.output
    return run


def load_runs(results: Path) -> dict[str, dict[str, Run]]:
    """experiment -> mode -> run, for every journal in the folder, experiments sorted."""
    runs: dict[str, dict[str, Run]] = {}
    for path in sorted(results.glob("journal-*.json")):
        if JOURNAL_NAME.match(path.name):
            run = read_run(path)
            runs.setdefault(run.experiment, {})[run.mode] = run
    return {
        name: {mode: by_mode[mode] for mode in MODES if mode in by_mode}
        for name, by_mode in sorted(runs.items())
    }


def probe_names(runs: dict[str, dict[str, Run]]) -> list[str]:
    """Every steady-state probe name in the journals, in order of first appearance."""
    names: dict[str, None] = {}
    for by_mode in runs.values():
        for run in by_mode.values():
            names.update(dict.fromkeys(run.probes))
    return list(names)


def method_probe_names(runs: dict[str, dict[str, Run]]) -> list[str]:
    """Every probe run in a method, in order of first appearance."""
    names: dict[str, None] = {}
    for by_mode in runs.values():
        for run in by_mode.values():
            names.update(dict.fromkeys(run.method))
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
        return NOT_RUN
    parts = [run.status, "deviated" if run.deviated else "not deviated"]
    if run.met_before is False:
        parts.append("hypothesis not met before")
    elif run.met_after is False and not run.deviated:
        parts.append("hypothesis not met after")
    if run.failed:
        parts.append(f"failed: {', '.join(run.failed)}")
    return ", ".join(parts)


def _verdict(run: Run | None, *, explain: bool = True) -> str:
    if run is None:
        return NOT_RUN
    if run.verdict:
        return PASS
    return f"{FAIL} {run.why}" if explain else FAIL


def _run_when(run: Run) -> str:
    return f"{run.profile or 'profile ?'}, {run.started}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(_escape(cell) for cell in cells) + " |"


def _header(titles: list[str]) -> list[str]:
    return ["| " + " | ".join(titles) + " |", "|" + "|".join("---" for _ in titles) + "|"]


def render_markdown(runs: dict[str, dict[str, Run]]) -> str:
    """docs/results.md: one row per experiment, every probe of every mode, before → after."""
    names = probe_names(runs)
    method = method_probe_names(runs)
    # The figures probe's dict, one column per figure (a whole dict would not fit a cell).
    figure_keys: dict[str, None] = {}
    for by_mode in runs.values():
        for each in by_mode.values():
            figure_keys.update(dict.fromkeys(each.figures))
    lines = _header(
        [
            "Experiment",
            *[f"Defenses {mode}" if mode != "cut" else "Loop cut" for mode in MODES],
            *[f"`{name}`" for name in names],
            *[f"`{name}` (method)" for name in method if name != FIGURES_PROBE],
            *[f"`{FIGURES_PROBE}` {key}" for key in figure_keys],
        ]
    )
    for experiment, by_mode in runs.items():
        cells = [f"`{experiment}`"]
        for mode in MODES:
            run = by_mode.get(mode)
            cell = _run_summary(run)
            if run is not None:
                cell = f"{cell}<br>{_run_when(run)}<br>{mode}: {_verdict(run)}"
            cells.append(cell)
        for name in names:
            parts = [
                f"{mode}: {_transition(run.probes[name], markdown=True)}"
                for mode, run in by_mode.items()
                if name in run.probes
            ]
            cells.append("<br>".join(parts) if parts else MISSING)
        for name in method:
            if name == FIGURES_PROBE:
                continue
            parts = [
                f"{mode}: {run.method[name].text}"
                for mode, run in by_mode.items()
                if name in run.method
            ]
            cells.append("<br>".join(parts) if parts else MISSING)
        for key in figure_keys:
            parts = [
                f"{mode}: {format_value(run.figures[key])}"
                for mode, run in by_mode.items()
                if key in run.figures
            ]
            cells.append("<br>".join(parts) if parts else MISSING)
        lines.append(_row(cells))
    lines += [
        "",
        "Modes: defenses on, defenses off (`--var defenses=off`), loop cut (`--var defenses=off "
        "--var loop=cut`); each run's verdict for its mode is `chaosemergence.verdict.judge`'s "
        f"({PASS} passed, {FAIL} failed, and why). Probe cells: steady-state output before → "
        f"after the method; {OUT_OF_TOLERANCE} marks an output outside the hypothesis' tolerance; "
        f"{MISSING} means the probe did not run (a hypothesis stops at its first failing probe). "
        "Columns marked (method) are probes of the method: one output per run; the "
        f"`{FIGURES_PROBE}` columns are the entries of its `{FIGURES_FUNC}` output.",
    ]
    tolerances = _tolerance_lines(runs, names)
    if tolerances:
        lines += ["", "Tolerances:", "", *tolerances]
    return "\n".join(lines) + "\n"


def _harm_probe(by_mode: dict[str, Run]) -> str | None:
    """The harm probe the negative control broke; else the hypothesis' first harm probe."""
    off = by_mode.get("off")
    if off is not None:
        broken = off.broken_probe()
        if broken is not None and off.probes[broken].func in HARM_PROBES:
            return broken
    for run in by_mode.values():
        for name, result in run.probes.items():
            if result.func in HARM_PROBES:
                return name
    return None


def _harm_cell(by_mode: dict[str, Run]) -> str:
    name = _harm_probe(by_mode)
    if name is None:
        return MISSING
    values = []
    for mode in ("off", "on", "cut"):
        run = by_mode.get(mode)
        if run is None:
            values.append(NOT_RUN)
        elif name not in run.probes:
            values.append(MISSING)
        else:
            result = run.probes[name]
            values.append(_value(result.after, result.after_met, markdown=True))
    return f"`{name}`: " + " / ".join(values)


def _entries(probe: MethodProbe) -> dict[str, str]:
    """A mechanism probe's output as short entries ('' for a plain value)."""
    if not probe.succeeded:
        return {"": "error"}
    output = probe.output
    if not isinstance(output, dict):
        return {"": format_value(output)}
    keys = (
        MECHANISM_KEYS.get(probe.func)
        or [
            key
            for key, value in output.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ][:DICT_ENTRIES]
    )
    return {key: format_value(output[key]) for key in keys if key in output}


def _mechanism_cell(by_mode: dict[str, Run]) -> str:
    """The method's mechanism probes, off / on; figures' mechanism entries when it has none."""
    pair = [by_mode.get("off"), by_mode.get("on")]
    rows: dict[tuple[str, str], list[str]] = {}
    for index, run in enumerate(pair):
        if run is None:
            continue
        for name, probe in run.mechanism().items():
            for key, text in _entries(probe).items():
                rows.setdefault((name, key), [MISSING, MISSING])[index] = text
    if not rows:
        for key in FIGURES_MECHANISM:
            values = [
                MISSING
                if run is None or run.figures.get(key) is None
                else format_value(run.figures[key])
                for run in pair
            ]
            if any(value != MISSING for value in values):
                rows[(FIGURES_PROBE, key)] = values
    if not rows:
        return MISSING
    parts = []
    for (name, key), values in rows.items():
        shown = [NOT_RUN if run is None else value for run, value in zip(pair, values, strict=True)]
        label = f"`{name}`" + (f" {key}" if key else "")
        parts.append(f"{label}: {' / '.join(shown)}")
    return "<br>".join(parts)


def _defenses_cell(on: Run | None) -> str:
    if on is None:
        return NOT_RUN
    activation = on.activation()
    if activation is None:
        return f"{MISSING} (no activation check)"
    if not activation.failed:
        return ", ".join(activation.named)
    acted = [n for n in activation.named if n not in activation.missing and n != "all"]
    parts = [", ".join(acted)] if acted and not activation.unexplained else []
    if activation.missing:
        parts.append(f"{FAIL} not activated: {', '.join(activation.missing)}")
    if activation.unexplained:
        parts.append(f"{FAIL} activation check failed")
    return "<br>".join(parts)


def render_summary(runs: dict[str, dict[str, Run]]) -> str:
    """The README's table: per experiment, the three verdicts, the harm probe off / on / cut,
    the mechanism evidence off / on and the defenses that activated in the defended run."""
    lines = _header(
        [
            "Experiment",
            "On: held, activated",
            "Off: harm",
            "Cut: held",
            "Harm probe (after): off / on / cut",
            "Mechanism: off / on",
            "Defenses activated (on)",
        ]
    )
    for experiment, by_mode in runs.items():
        cells = [
            f"`{experiment}`",
            *[_verdict(by_mode.get(mode)) for mode in ("on", "off", "cut")],
            _harm_cell(by_mode),
            _mechanism_cell(by_mode),
            _defenses_cell(by_mode.get("on")),
        ]
        lines.append(_row(cells))
    every = [run for by_mode in runs.values() for run in by_mode.values()]
    dates = sorted({run.started for run in every})
    profiles = sorted({run.profile or "profile ?" for run in every})
    lines += [
        "",
        f"Profile {', '.join(profiles)}; runs from {dates[0]} to {dates[-1]}. Verdicts "
        f"(`chaosemergence.verdict`, {PASS}/{FAIL}): on, the hypothesis held and the defenses "
        "its activation check names activated; off (`--var defenses=off`), it deviated on a "
        "harm probe, what users see; cut (`--var defenses=off --var loop=cut`), the trigger "
        "stayed, the loop was cut, and it held. The harm probe is the one the negative control "
        f"broke, after the method ({OUT_OF_TOLERANCE}: outside its tolerance; {MISSING}: not "
        "measured, a hypothesis stops at its first failing probe). Mechanism: the method's own "
        f"probes (else the `{FIGURES_PROBE}` probe's amplification and coalescing ratio) showing "
        "the loop at work.",
    ]
    return "\n".join(lines) + "\n"


def _tolerance_lines(runs: dict[str, dict[str, Run]], names: Iterable[str]) -> list[str]:
    lines = []
    for name in names:
        seen: dict[str, list[str]] = {}
        for experiment, by_mode in runs.items():
            for run in by_mode.values():
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
    for experiment, by_mode in runs.items():
        lines.append(experiment)
        for mode in MODES:
            run = by_mode.get(mode)
            if run is None:
                lines.append(f"  {mode:<3}  {NOT_RUN}")
                continue
            lines.append(
                f"  {mode:<3}  {_verdict(run)}  {_run_summary(run)}  ({_run_when(run)})  {run.path}"
            )
            width = max((len(name) for name in [*run.probes, *run.method]), default=0)
            for name, result in run.probes.items():
                lines.append(f"    {name:<{width}}  {_transition(result, markdown=False)}")
            for name, probe in run.method.items():
                lines.append(f"    {name:<{width}}  {probe.text} (method)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaosemergence.report",
        description="Summarize journal-<experiment>-<on|off|cut>.json files from a results folder.",
    )
    parser.add_argument("results", nargs="?", default="results", type=Path)
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--markdown", action="store_true", help="print every probe as a markdown table"
    )
    output.add_argument(
        "--summary",
        action="store_true",
        help="print the README's markdown table: the three verdicts, harm, mechanism, defenses",
    )
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"no such folder: {args.results}", file=sys.stderr)
        return 2
    runs = load_runs(args.results)
    if not runs:
        print(
            f"no journal-<experiment>-<on|off|cut>.json in {args.results}: "
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
