"""Run `chaos` as a subprocess and judge the run by its journal, not its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUN_EXPERIMENT = ROOT / ".ci" / "run-experiment.sh"
CHAOS = [sys.executable, "-m", "chaostoolkit", "--no-version-check"]


def run_experiment(
    experiment: str,
    workdir: Path,
    env: dict[str, str],
    variables: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """Run the experiment with the CI profile through `.ci/run-experiment.sh`; its journal.

    The same script the weekly workflow runs, so the suite tests the weekly command.
    """
    variables = dict(variables or {})
    defenses = variables.pop("defenses", "on")
    assert not variables, f"run-experiment.sh takes only defenses, got {variables}"
    name = Path(experiment).stem
    completed = subprocess.run(
        [str(RUN_EXPERIMENT), name, "ci", defenses],
        cwd=workdir,
        env={**os.environ, **env, "RESULTS_DIR": str(workdir), "VENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    journal = workdir / f"journal-{name}-{defenses}.json"
    log = workdir / f"chaostoolkit-{name}-{defenses}.log"
    output = completed.stdout[-3000:] + completed.stderr[-3000:]
    assert journal.exists(), f"no journal written:\n{output}"
    result: dict[str, Any] = json.loads(journal.read_text())
    result["_output"] = output + (log.read_text()[-6000:] if log.exists() else "")
    return result


def probe_outputs(journal: dict[str, Any], phase: str) -> dict[str, Any]:
    probes = journal["steady_states"][phase]["probes"]
    return {p["activity"]["name"]: p["output"] for p in probes}


def assert_held(journal: dict[str, Any]) -> None:
    """Completed, not deviated, both steady states met, every method activity succeeded."""
    context = journal["_output"]
    assert journal["status"] == "completed", context
    assert journal["deviated"] is False, context
    assert journal["steady_states"]["before"]["steady_state_met"] is True, context
    assert journal["steady_states"]["after"]["steady_state_met"] is True, (
        probe_outputs(journal, "after"),
        context,
    )
    failed = [r["activity"]["name"] for r in journal["run"] if r["status"] != "succeeded"]
    assert not failed, context
    assert all(r["status"] == "succeeded" for r in journal["rollbacks"]), context
