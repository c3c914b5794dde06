"""Every experiment, three ways: the three verdicts that prove a defense (docs/experiments.md).

- defenses on: holds, and the defenses that break its loop activated;
- defenses off: deviates on harm users see (a harm probe broke after the method);
- `--var loop=cut` (defenses off, the trigger kept, the loop cut): holds.

Each run is a `chaos run` subprocess with the CI profile (through `.ci/run-experiment.sh`, the
command the weekly workflow runs), judged by its journal with `chaosemergence.verdict.judge`.
The runs are independent systems on their own ports, so they run side by side
(CHAOSEMERGENCE_PARALLEL_RUNS, default 2: this suite must stay under 30 minutes on two cores);
only the runs of the selected tests are started.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaosemergence.verdict import MODES, judge, summarize
from tests.conftest import free_port
from tests.e2e.chaosrun import ROOT, run_experiment

pytestmark = pytest.mark.e2e

# The defenses that break each experiment's loop: its defended run's activation check must
# ask for every one of them (and they must have activated for the check to succeed).
LOOP_BREAKERS: dict[str, set[str]] = {
    "validate-emergence-defenses": {"circuit_breaker"},
    "retry-storm": {"circuit_breaker"},
    "thundering-herd": {"request_coalescing"},
    "death-spiral": set(),  # one of LOOP_BREAKER_ALTERNATIVES below
    "synchronization": {"jitter"},
    "cascade": {"cellular_routing"},
    "cascade-failing-dependency": {"cellular_routing"},
    "metastable": {"metastable_detector", "metastable_recovery"},
}
# Where any one of several defenses breaks the loop.
LOOP_BREAKER_ALTERNATIVES: dict[str, set[str]] = {
    "death-spiral": {"memory_guardrail", "gc_breaker"},
}
# Longest first, so that side-by-side runs finish together.
SLOW_FIRST = ("metastable", "death-spiral", "synchronization", "thundering-herd")
PARALLEL = int(os.environ.get("CHAOSEMERGENCE_PARALLEL_RUNS", "2"))


def experiments() -> list[str]:
    return sorted(path.stem for path in (ROOT / "experiments").glob("*.yaml"))


def _run(experiment: str, mode: str, workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = {"CHAOSEMERGENCE_URL": f"http://127.0.0.1:{port}", "CHAOSEMERGENCE_HOME": str(workdir)}
    journal = run_experiment(experiment, workdir, env, {"defenses": mode})
    # The reference-system control stopped what it started: nothing answers on the port.
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    except httpx.HTTPError:
        journal["_stopped"] = True
    else:
        journal["_stopped"] = False
    return journal


@pytest.fixture(scope="session")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Future[dict[str, Any]]]:
    """Every selected (experiment, mode) run, PARALLEL at a time, all finished before any
    test judges one (so no run overlaps the suite's other tests)."""
    wanted = []
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.originalname == "test_three_verdicts" and callspec is not None:
            wanted.append((callspec.params["experiment"], callspec.params["mode"]))
    order = {name: i for i, name in enumerate(SLOW_FIRST)}
    wanted.sort(key=lambda run: (order.get(run[0], len(order)), run))
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        futures = {
            (name, mode): pool.submit(_run, name, mode, tmp_path_factory.mktemp(f"{name}-{mode}"))
            for name, mode in wanted
        }
    return futures


# The first test's setup runs every selected experiment (about 12 minutes for all of them).
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("experiment", experiments())
def test_three_verdicts(
    experiment: str, mode: str, runs: dict[tuple[str, str], Future[dict[str, Any]]]
) -> None:
    """on holds and its loop breakers activated; off deviates on harm; loop=cut holds."""
    journal = runs[(experiment, mode)].result()
    context = journal["_output"]
    ok, why = judge(mode, journal)
    assert ok, "\n".join([f"{experiment} {mode}: {why}", *summarize(journal)[1], context])
    assert journal["_stopped"], f"the reference system outlived the run\n{context}"
    assert all(r["status"] == "succeeded" for r in journal["rollbacks"]), context
    if mode == "on":
        asked = set()
        for activity in journal["run"]:
            provider = activity["activity"]["provider"]
            if provider.get("func") == "check_defense_activation":
                asked |= set(provider.get("arguments", {}).get("defenses") or [])
        assert LOOP_BREAKERS[experiment] <= asked, (experiment, asked)
        alternatives = LOOP_BREAKER_ALTERNATIVES.get(experiment)
        assert not alternatives or alternatives & asked, (experiment, asked)


def test_every_experiment_has_its_loop_breakers_and_a_loop_to_cut() -> None:
    """No experiment escapes the three verdicts: each declares `loop` and its loop breakers."""
    assert set(experiments()) == set(LOOP_BREAKERS)
    for name in experiments():
        text = (ROOT / "experiments" / f"{name}.yaml").read_text()
        assert "loop: ${loop}" in text and "loop_cut:" in text, name
