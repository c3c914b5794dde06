"""Every pattern experiment, both ways: defenses on must hold, defenses off must deviate.

An experiment that passes whether or not the defenses exist proves nothing, so each one
runs twice in the CI profile, as `chaos run` subprocesses judged by their journals.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.chaosrun import assert_held, probe_outputs, run_experiment

pytestmark = pytest.mark.e2e

# experiment -> the steady-state probe that names its pattern (the one "off" must break)
PATTERN_PROBES = {
    "validate-emergence-defenses.yaml": "latency-remains-bounded",
    "retry-storm.yaml": "retry-amplification",
    "thundering-herd.yaml": "coalescing-ratio",
    "death-spiral.yaml": "cells-down",
    "metastable.yaml": "requests-failing",
    "synchronization.yaml": "service-correlation",
    "cascade.yaml": "failure-radius-outside-cell-0",
    "cascade-failing-dependency.yaml": "failure-radius-outside-cell-0",
}
# The flagship's "on" runs are test_flagship.py's (embedded and with Prometheus).
ON_RUNS = sorted(set(PATTERN_PROBES) - {"validate-emergence-defenses.yaml"})


def _run(experiment: str, tmp_path: Path, defenses: str) -> dict[str, object]:
    port = free_port()
    env = {"CHAOSEMERGENCE_URL": f"http://127.0.0.1:{port}", "CHAOSEMERGENCE_HOME": str(tmp_path)}
    journal = run_experiment(experiment, tmp_path, env, {"defenses": defenses})
    # The reference-system control stopped what it started: nothing answers on the port.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    return journal


@pytest.mark.parametrize("experiment", ON_RUNS)
def test_defenses_on_hold(experiment: str, tmp_path: Path) -> None:
    """With the defenses on, the experiment completes without deviating."""
    assert_held(_run(experiment, tmp_path, "on"))


@pytest.mark.parametrize("experiment", sorted(PATTERN_PROBES))
def test_defenses_off_deviate_on_the_pattern_probe(experiment: str, tmp_path: Path) -> None:
    """With the defenses off, the after-hypothesis fails on the probe that names the pattern."""
    journal = _run(experiment, tmp_path, "off")
    context = journal["_output"]
    assert journal["status"] == "completed", context
    assert journal["steady_states"]["before"]["steady_state_met"] is True, context
    assert journal["deviated"] is True, context
    after = journal["steady_states"]["after"]["probes"]
    failing = [p["activity"]["name"] for p in after if p["tolerance_met"] is False]
    assert PATTERN_PROBES[experiment] in failing, (failing, probe_outputs(journal, "after"))


def test_every_experiment_is_run_both_ways() -> None:
    """No experiment in experiments/ escapes the negative control."""
    on_disk = {p.name for p in (Path(__file__).parents[2] / "experiments").glob("*.yaml")}
    assert on_disk == set(PATTERN_PROBES)
