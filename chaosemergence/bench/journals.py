"""The experience and effectiveness sections: wall times and what the defenses achieve.

Both read the journals `.ci/run-experiment.sh` leaves (``journal-<experiment>-<mode>.json``
and ``run-<experiment>-<mode>.json``, chaosemergence/report.py reads them), from the folders
given with ``--results``; several folders are merged, the latest run of an experiment and
mode winning. ``--experience`` measures instead of reading: it times ``make run`` (after
setup: the virtualenv exists) and then runs the CI-profile set (every experiment, defenses
on) into a fresh folder, about ten minutes, whose journals the effectiveness section reads.

Effectiveness, each figure from the defended run (mode ``on``) and anchored on the same
experiment's undefended run (mode ``off``) when there is one, so the ratio says what the
defenses changed:

- ``p99_ms_20pct_timeouts``: retry-storm (20% of dependency calls time out), the run's p99
  (goal at most 250 ms; the seed's tolerance is 1,000 ms);
- ``retry_amplification``: retry-storm, attempts on the dependency per first attempt
  (goal at most 1.1);
- ``computations_per_key``: thundering-herd, computations per missed key in the stampede
  (goal 1: one computation per key);
- ``failure_radius_one_cell_down``: cascade (one cell killed), the share of requests that
  failed. The goal is set for the run's cell count: one cell's share plus one point
  (0.11 for one of ten; the CI profile runs four cells, so 0.26);
- ``correlation_after_defense``: synchronization, the cells' load correlation after the
  jitter defense acted (goal at most 0.2; the seed reports 0.23);
- ``metastable_recovery_s``: metastable, seconds from the trigger's end to recovery
  (goal at most 30 s; the seed quotes about four minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from chaosemergence.bench.record import Record
from chaosemergence.report import Run, read_run

__all__ = [
    "effectiveness_section",
    "experience_section",
    "load_latest",
    "run_experience",
]

ROOT = Path(__file__).resolve().parents[2]
FLAGSHIP = "validate-emergence-defenses"  # what `make run` runs
RUN_TIMEOUT = 600.0  # one experiment, at most (the CI profile's take about 90 s)


def load_latest(folders: Iterable[Path]) -> dict[str, dict[str, Run]]:
    """experiment -> mode -> its latest run, over every journal in ``folders``."""
    runs: dict[str, dict[str, Run]] = {}
    for folder in folders:
        for path in sorted(folder.glob("journal-*-*.json")):
            try:
                run = read_run(path)
            except (ValueError, OSError, json.JSONDecodeError) as error:
                print(f"bench: skipping {path}: {error}", file=sys.stderr)
                continue
            by_mode = runs.setdefault(run.experiment, {})
            earlier = by_mode.get(run.mode)
            if earlier is None or run.started >= earlier.started:
                by_mode[run.mode] = run
    return runs


def journal_seconds(run: Run) -> float | None:
    """The run's wall time as its journal records it (chaos's own `duration`)."""
    try:
        duration = json.loads(run.path.read_text()).get("duration")
    except (OSError, json.JSONDecodeError):
        return None
    return float(duration) if isinstance(duration, int | float) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _method(run: Run | None, probe: str) -> float | None:
    if run is None or probe not in run.method or not run.method[probe].succeeded:
        return None
    return _number(run.method[probe].output)


def _figure(run: Run | None, name: str, scale: float = 1.0) -> float | None:
    value = None if run is None else _number(run.figures.get(name))
    return None if value is None else value * scale


def profile_cells(run: Run | None) -> int | None:
    """The cell count of the profile the run used (.ci/profiles/<profile>.yaml)."""
    if run is None or run.profile is None:
        return None
    try:
        data = yaml.safe_load((ROOT / ".ci" / "profiles" / f"{run.profile}.yaml").read_text())
        cells = data["configuration"]["cells"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    return int(cells) if isinstance(cells, int) else None


# (figure, experiment, unit, goal, read): read takes a run and returns the figure's value.
Reader = Callable[[Run | None], float | None]
EFFECTIVENESS: tuple[tuple[str, str, str, str | None, Reader], ...] = (
    (
        "p99_ms_20pct_timeouts",
        "retry-storm",
        "ms",
        "value <= 250",
        lambda r: _figure(r, "p99_ms"),
    ),
    (
        "retry_amplification",
        "retry-storm",
        "ratio",
        "value <= 1.1",
        lambda r: _method(r, "retry-amplification"),
    ),
    (
        "computations_per_key",
        "thundering-herd",
        "computations/key",
        "value <= 1",
        lambda r: _method(r, "computations-per-missed-key"),
    ),
    (
        "failure_radius_one_cell_down",
        "cascade",
        "fraction",
        None,  # set from the run's cell count
        lambda r: _figure(r, "failure_radius_pct", 0.01),
    ),
    (
        "correlation_after_defense",
        "synchronization",
        "correlation",
        "value <= 0.2",
        lambda r: _method(r, "service-correlation"),
    ),
    (
        "metastable_recovery_s",
        "metastable",
        "s",
        "value <= 30",
        lambda r: _method(r, "recovery-seconds"),
    ),
)


def effectiveness_section(record: Record, runs: dict[str, dict[str, Run]]) -> None:
    """The effectiveness figures of the latest runs (null where a journal is missing)."""
    section = "effectiveness"
    for name, experiment, unit, goal, read in EFFECTIVENESS:
        by_mode = runs.get(experiment, {})
        on, off = by_mode.get("on"), by_mode.get("off")
        if name == "failure_radius_one_cell_down":
            cells = profile_cells(on)
            record.add(section, "cells_in_failure_radius_run", cells and float(cells), "cells")
            goal = None if not cells else f"value <= {1 / cells + 0.01:.2f}"
        record.add(section, f"{name}_off", read(off), unit)
        record.add(
            section,
            name,
            read(on),
            unit,
            anchor=f"{section}/{name}_off",
            goal=goal,
        )


def experience_section(
    record: Record,
    runs: dict[str, dict[str, Run]],
    measured: dict[str, float | None] | None = None,
) -> None:
    """Wall times: `make run` and the CI-profile set, measured or from the journals."""
    section = "experience"
    flagship = runs.get(FLAGSHIP, {}).get("on")
    on_runs = [by_mode["on"] for by_mode in runs.values() if "on" in by_mode]
    all_runs = [run for by_mode in runs.values() for run in by_mode.values()]

    def total(selected: Sequence[Run]) -> float | None:
        seconds = [journal_seconds(run) for run in selected]
        if not seconds or any(s is None for s in seconds):
            return None
        return sum(s for s in seconds if s is not None)

    measured = measured or {}
    record.add(
        section,
        "make_run_s",
        measured.get("make_run_s"),
        "s",
        goal="value <= 90",
    )
    record.add(
        section,
        "flagship_journal_s",
        None if flagship is None else journal_seconds(flagship),
        "s",
        goal="value <= 90",
    )
    record.add(section, "ci_set_s", measured.get("ci_set_s"), "s")
    record.add(section, "ci_set_on_journals_s", total(on_runs), "s")
    record.add(section, "ci_set_experiments", float(len(on_runs)), "experiments")
    record.add(section, "ci_all_modes_journals_s", total(all_runs), "s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_experience(
    workdir: Path, progress: Callable[[str], None] = lambda _: None
) -> tuple[dict[str, float | None], Path]:
    """Time `make run`, then the CI-profile set (defenses on); return the times and journals."""
    env = {
        **os.environ,
        "CHAOSEMERGENCE_URL": f"http://127.0.0.1:{_free_port()}",
        "CHAOSEMERGENCE_HOME": str(workdir / "home"),
    }
    make = shutil.which("make")
    measured: dict[str, float | None] = {"make_run_s": None, "ci_set_s": None}
    if make is not None:
        progress("experience: make run")
        started = time.perf_counter()
        done = subprocess.run(
            [make, "-C", str(ROOT), "run", f"JOURNAL={workdir / 'journal.json'}"],
            env=env,
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        if (workdir / "journal.json").exists():
            measured["make_run_s"] = time.perf_counter() - started
        else:
            print(f"experience: make run wrote no journal: {done.stderr[-300:]!r}")
    results = workdir / "results"
    experiments = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
    started = time.perf_counter()
    for experiment in experiments:
        progress(f"experience: {experiment} (ci, on)")
        subprocess.run(
            [str(ROOT / ".ci" / "run-experiment.sh"), experiment, "ci", "on"],
            env={**env, "RESULTS_DIR": str(results)},
            capture_output=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    if len(list(results.glob("journal-*-on.json"))) == len(experiments):
        measured["ci_set_s"] = time.perf_counter() - started
    return measured, results


def journals_sections(
    record: Record,
    sections: Sequence[str],
    results: Sequence[Path],
    experience: bool,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """The experience and effectiveness sections, measured (``experience``) or read."""
    with tempfile.TemporaryDirectory(prefix="chaosemergence-experience-") as tmp:
        measured: dict[str, float | None] | None = None
        folders = list(results)
        if experience and "experience" in sections:
            measured, fresh = run_experience(Path(tmp), progress)
            folders = [fresh]
        runs = load_latest(folders)
        if not runs:
            print(
                "experience/effectiveness: no journals (give --results DIR, or --experience);"
                " their figures are null",
                file=sys.stderr,
            )
        if "experience" in sections:
            experience_section(record, runs, measured)
        if "effectiveness" in sections:
            effectiveness_section(record, runs)
