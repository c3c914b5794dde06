"""Nothing the tool changes outlives the experiment by accident (docs/trust.md).

Real `chaos run`s of one tiny fixture (experiments/trust-paths.yaml: defenses off from the
control, jitter removed, a long fault, a cell killed, then a pause), changed in one place
per path. After each way a run can end, the system is clean: no fault, every defense on,
jitter restored, every cell up. A SIGKILLed `chaos` runs no rollback: there the lease
(defenses, jitter) and the faults' own expiry are the promise.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.app.helpers import problems, wait_for
from tests.conftest import RunningSystem, start_system, stop_system
from tests.e2e.chaosrun import CHAOS

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "experiments" / "trust-paths.yaml"
LEASE = 3.0  # seconds: the lease the fixture's runs take (TRUST_LEASE_SECONDS)
RUN_TIMEOUT = 120.0
FAULT_SECONDS = 8 * LEASE  # the SIGKILL path's fault: outlasts the lease, then expires


@pytest.fixture(scope="module")
def trust_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_system(tmp_path_factory.mktemp("trust"), cells=2)
    yield running
    stop_system(running)


@pytest.fixture
def system(trust_system: RunningSystem) -> Iterator[RunningSystem]:
    """The module's system, reset before the test (never after: the test judges it)."""
    assert trust_system.admin("POST", "/admin/reset").status_code == 200
    assert problems(trust_system) == []
    yield trust_system
    trust_system.admin("POST", "/admin/reset")


def weakened(system: RunningSystem, *, faults: bool = True) -> bool:
    """The method has done its work: a cell down, jitter removed, defenses off, a fault."""
    state = system.admin("GET", "/admin/state").json()
    live = [c for c in state["cells"] if c["alive"]]
    return (
        not state["cells"][0]["alive"]
        and bool(live)
        and all(c["state"]["jitter_removed"] for c in live)
        and (not faults or all(c["state"]["faults"] for c in live))
        and not any(c["state"]["defenses"]["load_shedding"] for c in live)
    )


def experiment(tmp_path: Path, change: Any = None) -> Path:
    """The fixture, changed in one place by `change(doc)`, written as JSON."""
    doc = yaml.safe_load(FIXTURE.read_text())
    if change is not None:
        doc = copy.deepcopy(doc)
        change(doc)
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(doc))
    return path


def start_chaos(system: RunningSystem, path: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CHAOSEMERGENCE_URL": system.url,
        "CHAOSEMERGENCE_HOME": str(system.state_dir),
        "TRUST_LEASE_SECONDS": str(LEASE),
    }
    env.pop("CHAOSEMERGENCE_ADMIN_TOKEN", None)
    return subprocess.Popen(
        [*CHAOS, "run", "--journal-path", str(tmp_path / "journal.json"), str(path)],
        cwd=tmp_path,
        env=env,
        stdout=(tmp_path / "chaos.out").open("wb"),
        stderr=subprocess.STDOUT,
    )


def finish(process: subprocess.Popen[bytes], tmp_path: Path) -> dict[str, Any]:
    """Wait for `chaos` to end; its journal (the run's own account)."""
    try:
        process.wait(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    output = (tmp_path / "chaos.out").read_text(errors="replace")[-4000:]
    journal_path = tmp_path / "journal.json"
    assert journal_path.exists(), output
    journal: dict[str, Any] = json.loads(journal_path.read_text())
    journal["_output"] = output
    return journal


def run_to_end(system: RunningSystem, tmp_path: Path, change: Any = None) -> dict[str, Any]:
    return finish(start_chaos(system, experiment(tmp_path, change), tmp_path), tmp_path)


def assert_rolled_back_clean(system: RunningSystem, journal: dict[str, Any]) -> None:
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"], journal["_output"]
    assert problems(system) == [], journal["_output"]


# ------------------------------------------------------------------ rollbacks on every path


def test_a_deviation_is_rolled_back(system: RunningSystem, tmp_path: Path) -> None:
    """The fixture as is: the killed cell fails the after hypothesis; the reset still runs."""
    journal = run_to_end(system, tmp_path)
    assert journal["deviated"] is True, journal["_output"]
    assert_rolled_back_clean(system, journal)


def test_a_failed_action_is_rolled_back(system: RunningSystem, tmp_path: Path) -> None:
    """An action the system refuses (an unknown dependency) fails; the reset still runs."""

    def failing_action(doc: dict[str, Any]) -> None:
        doc["method"].insert(
            3,
            {
                "type": "action",
                "name": "refused",
                "provider": {
                    "type": "python",
                    "module": "chaosemergence.actions",
                    "func": "inject_errors",
                    "arguments": {"percentage": 10, "dependency": "no-such-dependency"},
                },
            },
        )

    journal = run_to_end(system, tmp_path, failing_action)
    statuses = {r["activity"]["name"]: r["status"] for r in journal["run"]}
    assert statuses["refused"] == "failed", journal["_output"]
    assert_rolled_back_clean(system, journal)


def test_a_failed_before_hypothesis_is_rolled_back(system: RunningSystem, tmp_path: Path) -> None:
    """The before hypothesis cannot hold: the method is skipped, and the defenses the
    control switched off are switched back on by the reset."""

    def impossible(doc: dict[str, Any]) -> None:
        doc["steady-state-hypothesis"]["probes"][0]["tolerance"] = 5

    journal = run_to_end(system, tmp_path, impossible)
    assert journal["steady_states"]["before"]["steady_state_met"] is False, journal["_output"]
    assert journal["run"] == [], journal["_output"]
    assert_rolled_back_clean(system, journal)


def test_a_safeguard_abort_is_rolled_back(system: RunningSystem, tmp_path: Path) -> None:
    """chaostoolkit-addons' safeguards control, with our cells_down probe every 0.5 s, stops
    the run when the cell dies (long before the 60 s pause ends); the reset still runs."""

    def guarded(doc: dict[str, Any]) -> None:
        doc["method"][-1]["pauses"]["after"] = 60
        doc["controls"].append(
            {
                "name": "safeguards",
                "provider": {
                    "type": "python",
                    "module": "chaosaddons.controls.safeguards",
                    "arguments": {
                        "probes": [
                            {
                                "name": "no-cell-down",
                                "type": "probe",
                                "frequency": 0.5,
                                "tolerance": 0,
                                "provider": {
                                    "type": "python",
                                    "module": "chaosemergence.probes",
                                    "func": "cells_down",
                                },
                            }
                        ]
                    },
                },
            }
        )

    journal = run_to_end(system, tmp_path, guarded)
    assert journal["status"] == "interrupted", journal["_output"]
    assert journal["safeguards"]["triggered_by"] == "no-cell-down", journal["_output"]
    assert_rolled_back_clean(system, journal)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_method_is_rolled_back(
    system: RunningSystem, tmp_path: Path, sig: signal.Signals
) -> None:
    """`chaos` gets SIGINT or SIGTERM during the method's pause: it stops, and rolls back."""

    def long_pause(doc: dict[str, Any]) -> None:
        doc["method"][-1]["pauses"]["after"] = 60

    process = start_chaos(system, experiment(tmp_path, long_pause), tmp_path)
    try:
        wait_for(lambda: weakened(system), bool, 60, "the method weakening the system")
        process.send_signal(sig)
        journal = finish(process, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert journal["status"] in ("interrupted", "aborted"), journal["_output"]
    assert_rolled_back_clean(system, journal)


# ---------------------------------------------------------- SIGKILL: leases and expiry


def test_a_killed_run_leaves_a_defended_system_by_itself(
    system: RunningSystem, tmp_path: Path
) -> None:
    """`chaos` SIGKILLed mid-fault, after set_defenses(enabled=false) and the jitter's
    removal: no rollback runs, yet within the lease every defense is back on and the
    jitter back, and the fault expires on its own. While `chaos` lived, its renewals kept
    the defenses off well past the lease."""

    def short_fault(doc: dict[str, Any]) -> None:
        doc["method"][1]["provider"]["arguments"]["duration"] = FAULT_SECONDS
        doc["method"][-1]["pauses"]["after"] = 120

    process = start_chaos(system, experiment(tmp_path, short_fault), tmp_path)
    try:
        wait_for(lambda: weakened(system), bool, 60, "the method weakening the system")
        # Three leases later, still off: the run renewed its lease.
        deadline = time.monotonic() + 3 * LEASE
        while time.monotonic() < deadline:
            assert process.poll() is None, "chaos ended early"
            assert weakened(system, faults=False), "defenses came back while the run lived"
            time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    # No rollback ran; the lease runs out: every defense on, jitter back (cell 0 stays
    # down: restarting a crashed cell is the reset's job, not the lease's).
    wait_for(
        lambda: [p for p in problems(system, cells_up=False) if "faults" not in p],
        lambda found: found == [],
        LEASE + 5,
        "defenses and jitter restored by the lease",
    )
    # The fault expires by itself.
    wait_for(
        lambda: problems(system, cells_up=False), lambda f: f == [], FAULT_SECONDS + 5, "faults"
    )
    lease = system.admin("GET", "/admin/lease").json()
    assert lease["held"] is False and lease["expirations"] >= 1
    events = system.admin("GET", "/admin/events?since=0").json()["events"]
    assert any(e["defense"] == "lease" and e["cell"] == "gateway" for e in events)
