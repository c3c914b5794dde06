"""The weekly run's red-week issue: which experiment, which mode, which probe went wrong.

`python -m chaosemergence.weekly RESULTS --experiments '["retry-storm", ...]' --run-url URL
--out DIR` reads the journals `.ci/weekly.sh` left in RESULTS (the weekly workflow's merged
artifacts), judges each as its mode of the three verdicts (`chaosemergence.verdict.judge`, the
judgement `.ci/run-experiment.sh` applied) and, when the week is red, writes `DIR/title.txt`
and `DIR/body.md` for the GitHub issue the workflow opens or updates (nothing when green). A
mode whose journal is missing (the job died before writing it) is red too. It prints `red` or
`green`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosemergence.report import EXCEPTION_PREFIX, Run, load_runs
from chaosemergence.verdict import ACTIVATION_PROBE, HARM_PROBES, MODES

__all__ = ["ISSUE_LABEL", "ISSUE_TITLE", "WrongVerdict", "issue_body", "main", "wrong_verdicts"]

ISSUE_TITLE = "Weekly chaos run: a defense proof went red"
ISSUE_LABEL = "weekly-chaos"
# What each mode must show (docs/experiments.md, chaosemergence.verdict).
EXPECTED = {
    "on": "holds, and its defenses activated",
    "off": "deviates on a harm probe",
    "cut": "holds (the loop cut)",
}
MODE_NAMES = {
    "on": "defenses on",
    "off": "defenses off (`--var defenses=off`)",
    "cut": "loop cut (`--var defenses=off --var loop=cut`)",
}
MAX_ERROR = 160


@dataclass
class WrongVerdict:
    """One (experiment, mode) whose run did not show what its mode must show."""

    experiment: str
    mode: str
    why: str
    # The probes (and activities) that went wrong, each with its output and tolerance.
    probes: list[str] = field(default_factory=list)
    journal: str | None = None


def _short(text: str) -> str:
    """One line, without the exception classes chaoslib prefixes, at most MAX_ERROR long."""
    text = EXCEPTION_PREFIX.sub("", " ".join(text.split()))
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _activity_errors(path: Path) -> dict[str, str]:
    """The method's failed activities, by name: the last line of each exception."""
    journal: dict[str, Any] = json.loads(path.read_text())
    errors = {}
    for entry in journal.get("run") or []:
        if entry.get("status") == "succeeded":
            continue
        lines = [str(line).strip() for line in entry.get("exception") or [] if str(line).strip()]
        name = str((entry.get("activity") or {}).get("name"))
        errors[name] = lines[-1] if lines else str(entry.get("status", "no status"))
    return errors


def _what_went_wrong(run: Run) -> list[str]:
    """The probes behind a wrong verdict, as `name (phase, func): output; tolerance`."""
    found = []
    for name, probe in run.probes.items():
        tolerance = run.tolerances.get(name, "?")
        for phase in ("before", "after"):
            if getattr(probe, f"{phase}_met") is False:
                output = getattr(probe, phase)
                found.append(
                    f"`{name}` ({phase} the method, {probe.func}): {output}, tolerance {tolerance}"
                )
    if run.mode == "off" and run.met_before is not False:
        # The negative control must break a harm probe: name the harm probes that held.
        held = [
            f"`{name}` ({probe.func}): {probe.after}, tolerance {run.tolerances.get(name, '?')}"
            for name, probe in run.probes.items()
            if probe.func in HARM_PROBES and probe.after_met is True
        ]
        if held:
            found.append("harm probes that held after the method: " + "; ".join(held))
    errors = _activity_errors(run.path)
    for name in run.failed:
        func = run.method[name].func if name in run.method else "action"
        if run.mode != "on" and func == ACTIVATION_PROBE:
            continue  # defenses are off: the activation check is expected to fail
        found.append(f"`{name}` ({func}) failed: {_short(errors.get(name, 'failed'))}")
    return found


def wrong_verdicts(results: Path, experiments: list[str]) -> list[WrongVerdict]:
    """Every (experiment, mode) of `experiments` (and any other journal found) judged wrong
    or never judged (no journal)."""
    runs = load_runs(results)
    wrong = []
    for experiment in sorted(set(experiments) | set(runs)):
        by_mode = runs.get(experiment, {})
        for mode in MODES:
            run = by_mode.get(mode)
            if run is None:
                why = "no journal: the run did not complete (see the job's log)"
                wrong.append(WrongVerdict(experiment, mode, why))
            elif not run.verdict:
                wrong.append(
                    WrongVerdict(experiment, mode, run.why, _what_went_wrong(run), run.path.name)
                )
    return wrong


def issue_body(
    wrong: list[WrongVerdict], run_url: str, *, profile: str = "weekly", job_result: str = ""
) -> str:
    """The issue's markdown: a table of the wrong verdicts, what went wrong, where to look."""
    lines = [
        "<!-- chaosemergence weekly red week -->",
        f"The weekly chaos run is red: [{run_url}]({run_url})",
        "",
    ]
    if not wrong:
        lines += [
            f"Every journal gave its mode's verdict, but a job ended `{job_result or 'failed'}`: "
            "the run's log says why.",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "| experiment | mode | must | verdict | failed probe |",
        "|---|---|---|---|---|",
    ]
    for item in wrong:
        first = item.probes[0] if item.probes else "—"
        lines.append(
            f"| `{item.experiment}` | {item.mode} | {EXPECTED[item.mode]} | {item.why} | "
            + first.replace("|", "\\|")
            + " |"
        )
    lines.append("")
    for item in wrong:
        lines.append(f"### `{item.experiment}`, {MODE_NAMES[item.mode]}")
        lines.append("")
        lines.append(f"Must: {EXPECTED[item.mode]}. Verdict: {item.why}.")
        lines += [f"- {probe}" for probe in item.probes]
        if item.journal:
            lines.append(
                f"- journal `{item.journal}` and the run's logs, Locust reports and Prometheus "
                f"snapshot in `{item.experiment}-{item.mode}/` of the artifact "
                f"`weekly-{item.experiment}`"
            )
        lines.append(
            f"- reproduce: `.ci/weekly.sh {item.experiment} {profile} {item.mode}` (docs/weekly.md)"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaosemergence.weekly", description=__doc__)
    parser.add_argument("results", type=Path, help="the folder of journals")
    parser.add_argument(
        "--experiments", default="[]", help="JSON list of the experiments that were to run"
    )
    parser.add_argument("--run-url", required=True, help="the workflow run, linked from the issue")
    parser.add_argument("--out", type=Path, required=True, help="where title.txt, body.md go")
    parser.add_argument("--profile", default="weekly")
    parser.add_argument(
        "--job-result", default="success", help="the experiment jobs' result (needs.*.result)"
    )
    args = parser.parse_args(argv)
    experiments = json.loads(args.experiments)
    if not isinstance(experiments, list) or not all(isinstance(e, str) for e in experiments):
        parser.error(f"--experiments must be a JSON list of names, got {args.experiments!r}")
    wrong = (
        wrong_verdicts(args.results, experiments)
        if args.results.is_dir()
        else [
            WrongVerdict(name, mode, "no journal: the run did not complete (see the job's log)")
            for name in experiments
            for mode in MODES
        ]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in ("title.txt", "body.md"):
        (args.out / stale).unlink(missing_ok=True)
    red = bool(wrong) or args.job_result != "success"
    if red:
        (args.out / "title.txt").write_text(ISSUE_TITLE + "\n")
        (args.out / "body.md").write_text(
            issue_body(wrong, args.run_url, profile=args.profile, job_result=args.job_result)
        )
    for item in wrong:
        detail = f": {item.probes[0]}" if item.probes else ""
        print(f"{item.experiment} {item.mode}: {item.why}{detail}", file=sys.stderr)
    print("red" if red else "green")
    return 0


if __name__ == "__main__":
    sys.exit(main())
