"""Helpers for the reference-system tests: a system with settings overrides, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaosemergence.defenses import HashRing
from tests.conftest import RunningSystem, start_system


def start_configured(state_dir: Path, overrides: dict[str, Any], cells: int = 3) -> RunningSystem:
    """`chaosemergence serve` with a `--config` file of settings overrides."""
    return start_system(state_dir, cells=cells, overrides=overrides)


def wait_for[T](read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Poll `read()` until `done(value)`, or fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last value {value!r}")
        time.sleep(0.2)
        value = read()
    return value


def users_of(cells: int, cell: int, count: int, prefix: str) -> list[str]:
    """`count` user ids the gateway routes to `cell` (its consistent-hash ring, computed here)."""
    ring = HashRing([str(i) for i in range(cells)])
    found = [f"{prefix}{i}" for i in range(10_000) if ring.node_for(f"{prefix}{i}") == str(cell)]
    assert len(found) >= count, f"fewer than {count} users for cell {cell}"
    return found[:count]


def events(system: RunningSystem, since: float, defense: str | None = None) -> list[dict[str, Any]]:
    """Defense events since `since` (all cells), optionally of one defense only."""
    found: list[dict[str, Any]] = system.admin("GET", f"/admin/events?since={since}").json()[
        "events"
    ]
    return [e for e in found if defense is None or e["defense"] == defense]


def cell_state(system: RunningSystem, cell: int) -> dict[str, Any]:
    """The gateway's view of one cell (read again while a live cell missed the fan-out)."""
    state: dict[str, Any] = answered_state(system)["cells"][cell]
    return state


def answered_state(system: RunningSystem, tries: int = 5) -> dict[str, Any]:
    """`/admin/state`, read again (up to `tries` times) while a live cell is named as not
    answering within the admin API's 0.8 s fan-out timeout: on a loaded machine a cell can
    be slow once, and that is the admin API keeping its promise, not the state asked about."""
    for _ in range(tries):
        state: dict[str, Any] = system.admin("GET", "/admin/state").json()
        slow = [
            c
            for c in state["cells"]
            if c["alive"] and "did not answer within" in str((c.get("state") or {}).get("error"))
        ]
        if not slow:
            break
        time.sleep(0.5)
    return state


def problems(system: RunningSystem, *, cells_up: bool = True) -> list[str]:
    """Everything that is not clean: faults, defenses off, jitter removed, cells down
    (docs/trust.md); [] when the system is clean."""
    state = answered_state(system)
    gateway = state["gateway"]
    found = []
    if gateway["shared_dependency"]["faults"]:
        found.append("a fault on the shared dependency")
    if not gateway["cellular_routing"]:
        found.append("cellular routing off")
    if not gateway["retry_budget"]["enabled"]:
        found.append("the gateway's retry budget off")
    if not all(b["enabled"] for b in gateway["breakers"].values()):
        found.append("the gateway's breakers off")
    if gateway["desired"]["switches"] or gateway["desired"]["jitter_removed"]:
        found.append(f"restarted cells would come back weakened: {gateway['desired']}")
    for cell in state["cells"]:
        index = cell["index"]
        if not cell["alive"]:
            if cells_up:
                found.append(f"cell {index} down")
            continue
        cell_state = cell["state"]
        if "error" in cell_state:
            found.append(f"cell {index}: {cell_state['error']}")
            continue
        if cell_state["faults"]:
            found.append(f"cell {index}: faults {[f['id'] for f in cell_state['faults']]}")
        off = [name for name, on in cell_state["defenses"].items() if not on]
        if off:
            found.append(f"cell {index}: defenses off {off}")
        if cell_state["jitter_removed"]:
            found.append(f"cell {index}: jitter removed")
    return found
