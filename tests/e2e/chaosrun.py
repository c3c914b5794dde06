"""Run `chaos` as a subprocess and judge the run by its journal, not its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CI_PROFILE = ROOT / ".ci" / "profiles" / "ci.yaml"
CHAOS = [sys.executable, "-m", "chaostoolkit", "--no-version-check"]


def run_experiment(
    experiment: str,
    workdir: Path,
    env: dict[str, str],
    variables: dict[str, str] | None = None,
    timeout: float = 600,
) -> dict[str, Any]:
    """`chaos run` the experiment with the CI profile; returns the journal."""
    journal = workdir / f"journal-{Path(experiment).stem}.json"
    command = [
        *CHAOS,
        "--log-file",
        str(workdir / "chaostoolkit.log"),
        "run",
        "--journal-path",
        str(journal),
        "--var-file",
        str(CI_PROFILE),
    ]
    for key, value in (variables or {}).items():
        command += ["--var", f"{key}={value}"]
    command.append(str(ROOT / "experiments" / experiment))
    completed = subprocess.run(
        command,
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert journal.exists(), (
        f"no journal written:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    )
    result: dict[str, Any] = json.loads(journal.read_text())
    result["_output"] = completed.stdout[-5000:] + completed.stderr[-5000:]
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
