"""Memory pressure in one cell of the real system: guarded and restarted, or dead at its limit."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

import probes
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.supervisor import Supervisor
from tests.app.helpers import cell_state, events, users_of, wait_for
from tests.conftest import RunningSystem

LEAKING = 1


class Traffic:
    """Profiles and payments for one cell's users, in the background, until stopped."""

    def __init__(self, system: RunningSystem, users: list[str]) -> None:
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(system.url, users))

    def _run(self, url: str, users: list[str]) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                user = users[i % len(users)]
                if i % 4 == 0:
                    body = {"amount_cents": 100, "idempotency_key": uuid.uuid4().hex}
                    answer = client.post(f"{url}/users/{user}/payments", json=body)
                else:
                    answer = client.get(f"{url}/users/{user}/profile")
                self.statuses[answer.status_code] += 1
                i += 1
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def leaky(clean_system: RunningSystem) -> Iterator[tuple[RunningSystem, list[str]]]:
    yield clean_system, users_of(clean_system.cells, LEAKING, 8, "leak")


@pytest.mark.parametrize(
    ("cell", "body", "field"),
    [
        (1, {"megabytes_per_second": 0, "duration": 5}, "megabytes_per_second"),
        (1, {"megabytes_per_second": 8, "duration": "5"}, "duration"),
        (9, {"megabytes_per_second": 8, "duration": 5}, "index"),
    ],
)
def test_memory_pressure_is_validated(
    clean_system: RunningSystem, cell: int, body: dict[str, object], field: str
) -> None:
    """A bad request is refused with 400 naming the field, and leaks nothing."""
    answer = clean_system.admin("POST", f"/admin/cells/{cell}/memory-pressure", json=body)
    assert answer.status_code == 400 and field in answer.json()["error"]
    assert cell_state(clean_system, LEAKING)["state"]["memory"]["ballast_bytes"] == 0


def test_guardrail_and_predictive_restart_keep_the_cell_alive(
    leaky: tuple[RunningSystem, list[str]],
) -> None:
    """Defenses on: the guardrail sheds, the cell restarts on its socket before its limit,
    and every acknowledged payment is in its database."""
    system, users = leaky
    before = cell_state(system, LEAKING)
    since = time.time()
    with Traffic(system, users) as traffic:
        answer = system.admin(
            "POST",
            f"/admin/cells/{LEAKING}/memory-pressure",
            json={"megabytes_per_second": 32, "duration": 60},
        )
        assert answer.status_code == 201
        assert answer.json()["seconds_to_limit"] == pytest.approx(8.0, abs=0.2)
        after = wait_for(
            lambda: cell_state(system, LEAKING),
            # ... and the new process answers with its state (not "cell is down" while it
            # starts, nor a miss of the admin fan-out's deadline).
            lambda c: (
                c["planned_restarts"] > before["planned_restarts"]
                and "memory" in (c["state"] or {})
            ),
            20,
            "a predictive restart",
        )
        time.sleep(0.5)  # traffic reaches the new process
    assert after["last_exit"]["reason"] == "predictive_restart"
    assert after["url"] == before["url"]  # same socket
    # The restart freed what had leaked, but the leak goes on in the new process.
    assert after["state"]["memory"]["pressure"]["megabytes_per_second"] == 32
    assert 0 < after["state"]["memory"]["pressure"]["remaining_seconds"] < 60
    found = {(e["defense"], e["kind"]) for e in events(system, since) if e["cell"] == LEAKING}
    assert ("memory_guardrail", "activated") in found
    assert ("predictive_restart", "activated") in found
    assert traffic.statuses[201] + traffic.statuses[202] > 0
    lost = system.admin("GET", "/admin/lost-writes").json()
    assert lost["lost_writes"] == 0 and lost["cells"][str(LEAKING)]["acknowledged"] > 0


def test_without_defenses_the_cell_dies_at_its_limit_until_reset(
    leaky: tuple[RunningSystem, list[str]],
) -> None:
    """Defenses off: the cell allocates up to its limit, dies like an OOM kill, stays dead."""
    system, users = leaky
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": None})
    # Keep cellular routing: this test is about the cell, not about failover.
    system.admin("POST", "/admin/defenses", json={"enabled": True, "names": ["cellular_routing"]})
    other = users_of(system.cells, 0, 1, "alive")[0]
    since = time.time()
    system.admin(
        "POST",
        f"/admin/cells/{LEAKING}/memory-pressure",
        json={"megabytes_per_second": 64, "duration": 60},
    )
    dead = wait_for(
        lambda: cell_state(system, LEAKING),
        lambda c: not c["alive"] and (c["last_exit"] or {}).get("at", 0) >= since,
        20,
        "the cell dying at its limit",
    )
    assert dead["last_exit"]["reason"] == "oom_killed" and dead["last_exit"]["code"] == -9
    time.sleep(1.0)  # nobody restarts it
    assert not cell_state(system, LEAKING)["alive"]
    down = httpx.get(f"{system.url}/users/{users[0]}/profile", timeout=5)
    assert down.status_code == 503 and down.headers["retry-after"]
    assert httpx.get(f"{system.url}/users/{other}/profile", timeout=5).status_code == 200
    assert system.admin("POST", "/admin/reset").json()["restarted"] == [LEAKING]
    assert httpx.get(f"{system.url}/users/{users[0]}/profile", timeout=5).status_code == 200
    assert cell_state(system, LEAKING)["state"]["defenses"]["predictive_restart"] is True


def _pressure(system: RunningSystem, cell: int) -> dict[str, float] | None:
    state = cell_state(system, cell)["state"]
    return None if state is None else state["memory"]["pressure"]


def test_a_leak_outlives_the_restart_of_a_dead_cell_until_it_expires(
    clean_system: RunningSystem,
) -> None:
    """Restarting a cell the leak killed gives the new process what is left of the leak,
    which kills it again; a reset forgets it."""
    system = clean_system
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": None})
    since = time.time()
    answer = system.admin(
        "POST",
        f"/admin/cells/{LEAKING}/memory-pressure",
        json={"megabytes_per_second": 128, "duration": 60},
    )
    assert answer.status_code == 201
    wait_for(
        lambda: cell_state(system, LEAKING),
        lambda c: not c["alive"] and (c["last_exit"] or {}).get("at", 0) >= since,
        20,
        "the cell dying at its limit",
    )
    restarted_at = time.time()
    assert system.admin("POST", "/admin/cells/restart").json()["restarted"] == [LEAKING]
    died_again = wait_for(
        lambda: cell_state(system, LEAKING),
        lambda c: not c["alive"] and (c["last_exit"] or {}).get("at", 0) >= restarted_at,
        20,
        "the restarted cell dying of the same leak",
    )
    assert died_again["last_exit"]["reason"] == "oom_killed"
    assert system.admin("POST", "/admin/reset").json()["restarted"] == [LEAKING]
    pressure = _pressure(system, LEAKING)
    assert pressure is None
    assert cell_state(system, LEAKING)["state"]["memory"]["ballast_bytes"] == 0


def test_an_expired_leak_is_not_given_to_a_restarted_cell(clean_system: RunningSystem) -> None:
    """Once the leak's duration is over, a new process of the cell starts without it."""
    system = clean_system
    answer = system.admin(
        "POST",
        f"/admin/cells/{LEAKING}/memory-pressure",
        json={"megabytes_per_second": 8, "duration": 0.5},
    )
    assert answer.status_code == 201
    wait_for(lambda: _pressure(system, LEAKING), lambda p: p is None, 10, "the leak expiring")
    assert system.admin("POST", f"/admin/cells/{LEAKING}/kill").json()["killed"] is True
    assert system.admin("POST", "/admin/cells/restart").json()["restarted"] == [LEAKING]
    state = cell_state(system, LEAKING)["state"]
    assert state["memory"]["pressure"] is None and state["memory"]["ballast_bytes"] == 0


def test_a_dependency_fault_outlives_a_restart_until_cleared(clean_system: RunningSystem) -> None:
    """A fault injected into a cell is back in its next process with the time it has left,
    also for a cell that was down when it was injected; once cleared, it is not."""
    system = clean_system
    assert system.admin("POST", "/admin/cells/2/kill").json()["killed"] is True
    answer = system.admin(
        "POST",
        "/admin/faults",
        json={"kind": "timeout", "dependency": "database", "duration": 60, "cells": [LEAKING, 2]},
    )
    assert answer.status_code == 201 and answer.json()["cells"] == [LEAKING]
    fault_id = answer.json()["id"]
    assert system.admin("POST", f"/admin/cells/{LEAKING}/kill").json()["killed"] is True
    assert system.admin("POST", "/admin/cells/restart").json()["restarted"] == [LEAKING, 2]
    for cell in (LEAKING, 2):
        faults = cell_state(system, cell)["state"]["faults"]
        assert [(f["id"], f["kind"], f["dependency"]) for f in faults] == [
            (fault_id, "timeout", "database")
        ]
        assert 0 < faults[0]["remaining_seconds"] < 60
    assert cell_state(system, 0)["state"]["faults"] == []  # not targeted
    system.admin("DELETE", f"/admin/faults?id={fault_id}")
    assert system.admin("POST", f"/admin/cells/{LEAKING}/kill").json()["killed"] is True
    assert system.admin("POST", "/admin/cells/restart").json()["restarted"] == [LEAKING]
    assert cell_state(system, LEAKING)["state"]["faults"] == []


def test_the_supervisor_keeps_faults_with_their_deadline(tmp_path: Path) -> None:
    """What a new process of a cell gets: the time left of each fault, none once expired."""
    now = [100.0]
    supervisor = Supervisor(SystemSettings(cells=3), "token", tmp_path, clock=lambda: now[0])
    supervisor.keep_memory_pressure(1, 16.0, 30.0)
    timeout = {"kind": "timeout", "dependency": "database", "percentage": 100.0, "duration": 10.0}
    supervisor.keep_fault("fault-1", [1, 2], timeout)
    now[0] += 4
    assert supervisor.standing_faults(1) == (
        {"megabytes_per_second": 16.0, "duration": 26.0},
        {"fault-1": {**timeout, "duration": 6.0}},
    )
    assert supervisor.standing_faults(0) == (None, {})
    now[0] += 6
    assert supervisor.standing_faults(2) == (None, {})  # the fault expired
    supervisor.forget_faults("fault-1", memory=False)
    assert supervisor.standing_faults(1)[0] == {"megabytes_per_second": 16.0, "duration": 20.0}
    supervisor.forget_faults()
    assert supervisor.standing_faults(1) == (None, {})


def test_route_failure_radius_measures_one_route(clean_system: RunningSystem) -> None:
    """Payments' failure radius: 0 while their cell serves them, most of them once it is dead;
    a route it does not know, or too few requests, fail the probe."""
    system = clean_system
    users = users_of(system.cells, LEAKING, 4, "route")
    with Traffic(system, users):
        time.sleep(3.0)
    served = probes.route_failure_radius(
        "payments", window=3, min_requests=10, configuration=system.configuration
    )
    assert served == 0.0
    system.admin("POST", f"/admin/cells/{LEAKING}/kill")
    time.sleep(1.0)  # the window no longer holds the payments that were served
    with Traffic(system, users):
        time.sleep(3.0)
    failed = probes.route_failure_radius(
        "payments", window=2, min_requests=10, configuration=system.configuration
    )
    assert failed == 100.0
    with pytest.raises(ActivityFailed, match="route must be one of"):
        probes.route_failure_radius("checkout", configuration=system.configuration)
    with pytest.raises(ActivityFailed, match="min_requests"):
        probes.route_failure_radius(
            "payments", window=2, min_requests=10_000, configuration=system.configuration
        )
