"""Cascade risk, isolation score and reinforced boundaries in the real reference system."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.app.helpers import cell_state, events, users_of, wait_for
from tests.conftest import RunningSystem


def _loop(system: RunningSystem, cell: int) -> dict[str, Any]:
    loop: dict[str, Any] = cell_state(system, cell)["state"]["control_loop"]
    return loop


def _ask(system: RunningSystem, users: list[str], rounds: int) -> Counter[str]:
    """Each user's profile `rounds` times; count answers by status and who refused."""
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(rounds):
            for user in users:
                answer = client.get(f"{system.url}/users/{user}/profile")
                seen[str(answer.status_code)] += 1
                if answer.status_code == 503:
                    seen[f"503 {answer.json().get('shed_by')}"] += 1
    return seen


def test_a_healthy_cellular_system_is_isolated(clean_system: RunningSystem) -> None:
    """Every cell serves its own users only: isolation 1, cascade risk 0."""
    system = clean_system
    for cell in range(system.cells):
        _ask(system, users_of(system.cells, cell, 5, f"iso{cell}-"), 2)
    time.sleep(1.2)  # a control-loop tick over that traffic
    for cell in range(system.cells):
        loop = _loop(system, cell)
        assert loop["isolation_score"] == 1.0 and loop["cascade_risk"] == 0.0, loop
        assert loop["inputs"]["cascade_risk"] == 0.0


@pytest.mark.parametrize("reinforce", [True, False])
def test_failover_raises_cascade_risk_and_boundaries_are_reinforced(
    clean_system: RunningSystem, reinforce: bool
) -> None:
    """Shared mode, a dead cell: its users fail over to the next cell, whose isolation score
    drops and cascade risk rises, and the control loop sees a cascade forming. Reinforced
    boundaries then refuse the failed cell's users (503) and keep serving the cell's own;
    with `boundary_reinforcement` off, the failover load keeps flowing in."""
    system = clean_system
    switched = ["cellular_routing"] + ([] if reinforce else ["boundary_reinforcement"])
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": switched})
    orphans = users_of(system.cells, 0, 10, f"orphan{reinforce}-")
    own = users_of(system.cells, 1, 5, f"own{reinforce}-")
    since = time.time()
    assert system.admin("POST", "/admin/cells/0/kill").json()["killed"]
    wait_for(
        lambda: system.admin("GET", "/health").json()["alive"],
        lambda alive: alive == system.cells - 1,
        10,
        "cell 0 down",
    )
    # The orphans' requests fail over to cell 1 (next on the ring), mixed with its own users'.
    risen = wait_for(
        lambda: (_ask(system, orphans + own, 1), _loop(system, 1))[1],
        lambda loop: loop["inputs"] is not None and loop["isolation_score"] < 0.9,
        15,
        "failover traffic reaching cell 1",
    )
    # Measured on that tick: cross-cell traffic is the seed's cascade risk.
    assert risen["inputs"]["cascade_risk"] == pytest.approx(
        0.6 * (1 - risen["isolation_score"]), abs=0.05
    )
    assert risen["inputs"]["cascade_risk"] >= 0.1  # the seed's alert level
    assert risen["loop"]["last"]["patterns"]["cascade"] >= 0.5
    found = [e for e in events(system, since, "boundary_reinforcement") if e["cell"] == 1]
    if reinforce:
        assert found and found[0]["kind"] == "activated", found
        assert "cascade" in found[0]["reason"]
        # Cell 2 (next on the ring) gets what cell 1 refuses, and reinforces in turn.
        wait_for(
            lambda: [
                cell_state(system, c)["state"]["boundary_reinforcement"]["reinforced"]
                for c in (1, 2)
            ],
            all,
            10,
            "cells 1 and 2 reinforced",
        )
        seen = _ask(system, orphans, 2)
        # Every cell that got them refused them: no failover load crosses a boundary.
        assert seen["200"] == 0 and seen["503 boundary_reinforcement"] >= 10, seen
        mine = _ask(system, own, 2)
        assert mine["200"] == 10, mine
        state = cell_state(system, 1)["state"]["boundary_reinforcement"]
        assert state["reinforced"] and state["refused"] >= 10
    else:
        assert found == []
        seen = _ask(system, orphans, 2)
        assert seen["200"] == 20, seen  # served by other cells: the load moved
