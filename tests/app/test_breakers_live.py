"""Circuit breakers on every boundary of the real reference system, and their metrics.

Each test runs once with the `circuit_breaker` defense on and once with it off: the breaker
must be what makes the difference.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.helpers import cell_state, events, start_configured, users_of, wait_for
from tests.conftest import RunningSystem, stop_system

# Short TTLs (a cached profile expires while the test runs), a periodic refresh every 0.2 s
# (its breaker sees enough calls in a second or two), and a database callers wait 1 s for
# (a slow computation stays in flight while concurrent misses join it).
OVERRIDES: dict[str, object] = {
    "cache_ttl_seconds": 2.0,
    "refresh_interval_seconds": 0.2,
    "dependencies": {"database": {"call_timeout_ms": 1000}},
}


@pytest.fixture(scope="module")
def breaker_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_configured(tmp_path_factory.mktemp("breakers"), OVERRIDES)
    yield running
    stop_system(running)


@pytest.fixture
def system(breaker_system: RunningSystem) -> Iterator[RunningSystem]:
    assert breaker_system.admin("POST", "/admin/reset").status_code == 200
    yield breaker_system
    breaker_system.admin("POST", "/admin/reset")


def _off(system: RunningSystem, *names: str) -> None:
    answer = system.admin("POST", "/admin/defenses", json={"enabled": False, "names": list(names)})
    assert answer.status_code == 200, answer.text


def _fault(system: RunningSystem, dependency: str, **extra: object) -> None:
    body = {"kind": "error", "percentage": 100, "duration": 30, "dependency": dependency, **extra}
    assert system.admin("POST", "/admin/faults", json=body).status_code == 201


def _breaker(system: RunningSystem, cell: int, name: str) -> dict[str, Any]:
    breaker: dict[str, Any] = cell_state(system, cell)["state"]["breakers"][name]
    return breaker


def _metric(url: str, series: str) -> float:
    """The value of one exact series in a /metrics exposition (0 when absent)."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


TRIPPED = ("open", "emergency")


def _database_trips(url: str) -> float:
    return sum(
        _metric(url, f'emergence_breaker_trips_total{{cell="0",dependency="database",state="{s}"}}')
        for s in TRIPPED
    )


def _trips(system: RunningSystem, since: float, boundary: str) -> list[dict[str, Any]]:
    return [e for e in events(system, since, "breaker_trip") if e["detail"]["boundary"] == boundary]


@pytest.mark.parametrize("breaker", [True, False])
def test_database_calls_go_through_their_breaker(system: RunningSystem, breaker: bool) -> None:
    """A database that fails every call: its breaker trips on the failure rate (an event and
    a counter) and then rejects profile computations without calling it; off, every miss
    calls the database."""
    # The stampede emergency and the metastable recovery would answer before the breaker,
    # and the adaptive throttle would refuse calls locally: off, every call is the breaker's.
    _off(
        system,
        "stampede_protection",
        "metastable_detector",
        "metastable_recovery",
        "adaptive_throttle",
    )
    if not breaker:
        _off(system, "circuit_breaker")
    url = cell_state(system, 0)["url"]
    trips_before = _database_trips(url)
    calls_before = _breaker(system, 0, "database")["calls"]  # the reset's prewarming
    since = time.time()
    _fault(system, "database", cells=[0])
    users = users_of(system.cells, 0, 50, f"dbb{breaker}-")

    def ask(batch: list[str]) -> set[int]:
        with httpx.Client(timeout=10) as client:
            return {client.get(f"{system.url}/users/{u}/profile").status_code for u in batch}

    assert ask(users[:40]) == {503}  # nothing cached to fall back on: new users
    errors = cell_state(system, 0)["state"]["dependencies"]["database"]["errors"]
    assert ask(users[40:]) == {503}
    state = _breaker(system, 0, "database")
    more = cell_state(system, 0)["state"]["dependencies"]["database"]["errors"] - errors
    trips = _database_trips(url)
    if breaker:
        assert state["state"] == "open" and state["rejections"] >= 10, state
        assert "failure rate" in state["reason"]
        assert _trips(system, since, "database"), "no breaker_trip event"
        assert trips - trips_before == 1
        assert more == 0  # open: the last ten users' misses never reached the database
    else:
        assert state["calls"] == calls_before and state["state"] == "closed"
        assert _trips(system, since, "database") == [] and trips == trips_before
        assert more >= 10


@pytest.mark.parametrize("breaker", [True, False])
def test_an_expired_profile_is_served_stale_when_the_database_fails(
    system: RunningSystem, breaker: bool
) -> None:
    """The database breaker's fallback: a cached profile, even expired, rather than a 503."""
    _off(system, "stampede_protection", "early_expiration", "metastable_detector")
    if not breaker:
        _off(system, "circuit_breaker")
    user = users_of(system.cells, 0, 1, f"stale{breaker}-")[0]
    assert httpx.get(f"{system.url}/users/{user}/profile", timeout=5).json()["cache"] == "miss"
    time.sleep(2.2)  # the 2 s TTL passes
    _fault(system, "database", cells=[0])
    answer = httpx.get(f"{system.url}/users/{user}/profile", timeout=10)
    if breaker:
        assert answer.status_code == 200 and answer.json()["cache"] == "stale", answer.text
        assert cell_state(system, 0)["state"]["coalescing"]["stale_fallbacks"] >= 1
    else:
        assert answer.status_code == 503


@pytest.mark.parametrize("breaker", [True, False])
def test_the_periodic_refresh_goes_through_its_breaker(
    system: RunningSystem, breaker: bool
) -> None:
    """No user traffic, a failing recommendations dependency: the refresh job alone trips
    the breaker, whose fallback keeps the model; off, the job's calls bypass nothing."""
    if not breaker:
        _off(system, "circuit_breaker")
    since = time.time()
    _fault(system, "recommendations", cells=[0])
    if breaker:
        wait_for(
            lambda: _breaker(system, 0, "recommendations"),
            lambda b: b["state"] in TRIPPED,
            10,
            "the recommendations breaker tripped by the refresh job alone",
        )
        assert _trips(system, since, "recommendations")
        assert cell_state(system, 0)["state"]["shared_dependency"]["model_kept"] > 0
    else:
        runs = cell_state(system, 0)["state"]["shared_dependency"]["jobs"]
        # A refresh may have gone through it between the reset and the switch: count after.
        calls = _breaker(system, 0, "recommendations")["calls"]
        job = "refresh_recommendations"
        # Refreshes every 0.2 s (plus their retries), all failing: wait for three of them (a
        # loaded machine runs them late, never fewer), then look at the breaker.
        wait_for(
            lambda: cell_state(system, 0)["state"]["shared_dependency"]["jobs"][job]["runs"],
            lambda n: n - runs[job]["runs"] >= 3,
            30,
            "three failing refreshes with the breaker off",
        )
        state = _breaker(system, 0, "recommendations")
        assert state["calls"] == calls and state["state"] == "closed"
        assert _trips(system, since, "recommendations") == []


@pytest.mark.parametrize("breaker", [True, False])
def test_the_shared_config_poll_goes_through_its_breaker(
    system: RunningSystem, breaker: bool
) -> None:
    """The configuration every cell shares fails: every cell's poll breaker trips and its
    pollers stop reaching the shared dependency; off, they keep calling it."""
    if not breaker:
        _off(system, "circuit_breaker")
    since = time.time()
    _fault(system, "shared_config")

    def shared(cell: int) -> dict[str, Any]:
        section: dict[str, Any] = cell_state(system, cell)["state"]["shared_dependency"]
        return section

    if breaker:
        wait_for(
            lambda: [_breaker(system, c, "shared_config")["state"] for c in range(system.cells)],
            lambda states: all(s == "open" for s in states),
            # By failure rate: 20 polls at least, retried every 200 ms (longer under load).
            30,
            "every cell's shared-config breaker open",
        )
        assert {e["cell"] for e in _trips(system, since, "shared_config")} == {0, 1, 2}
        before = shared(0)
        time.sleep(2.0)
        after = shared(0)
        assert after["attempts"] == before["attempts"]  # open: nothing reaches the dependency
        assert after["rejected"] > before["rejected"]  # while the job keeps trying
    else:
        before = shared(0)
        time.sleep(2.0)
        after = shared(0)
        assert after["failures"] - before["failures"] >= 5
        assert after["rejected"] == before["rejected"]
        assert _trips(system, since, "shared_config") == []


def test_breaker_and_control_metrics_are_exported(system: RunningSystem) -> None:
    """Every breaker's emergence risk and trips, the phase-transition risk and coalesced
    requests are series of each cell; the gateway exports its breakers in front of cells."""
    url = cell_state(system, 0)["url"]
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for name in ("database", "payment_provider", "recommendations", "shared_config"):
        assert f'emergence_breaker_emergence_risk{{cell="0",dependency="{name}"}}' in text
        assert f'emergence_breaker_trips_total{{cell="0",dependency="{name}",state="open"}}' in text
    for series in (
        'emergence_phase_transition_risk{cell="0"}',
        'emergence_coalesced_requests_total{cell="0"}',
        'emergence_isolation_score{cell="0"} 1.0',
        'emergence_cascade_risk{cell="0"}',
        'emergence_precompute_jitter_delays_total{cell="0"}',
        'emergence_manual_intervention_required{cell="0"} 0.0',
    ):
        assert series in text, series
    gateway = httpx.get(f"{system.url}/metrics", timeout=5).text
    assert 'emergence_gateway_breaker_state{cell="0"} 0.0' in gateway


def test_coalesced_requests_are_counted(system: RunningSystem) -> None:
    """Concurrent misses of one key share a computation, and the counter says how many."""
    url = cell_state(system, 0)["url"]
    before = _metric(url, 'emergence_coalesced_requests_total{cell="0"}')
    # A slow database keeps the one computation in flight while the others arrive.
    body = {"kind": "latency", "latency_ms": 400, "percentage": 100, "duration": 10}
    system.admin("POST", "/admin/faults", json={**body, "dependency": "database", "cells": [0]})
    user = users_of(system.cells, 0, 1, "coal")[0]
    gate = threading.Barrier(8)

    def ask() -> None:
        gate.wait()
        httpx.get(f"{system.url}/users/{user}/profile", timeout=10)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _metric(url, 'emergence_coalesced_requests_total{cell="0"}') - before >= 5


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def impatient_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """A gateway that waits 0.5 s for a cell."""
    running = start_configured(
        tmp_path_factory.mktemp("impatient"), {"cell_timeout_seconds": 0.5}, cells=2
    )
    yield running
    stop_system(running)


def _cell_pid(system: RunningSystem, index: int) -> int:
    for pid in system.cell_pids():
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--index" in args and args[args.index(b"--index") + 1] == str(index).encode():
            return pid
    raise AssertionError(f"no process for cell {index}")


@pytest.mark.parametrize("breaker", [True, False])
def test_the_gateway_stops_waiting_on_a_hung_cell(
    impatient_system: RunningSystem, breaker: bool
) -> None:
    """A cell that stops answering (SIGSTOP): the gateway's breaker in front of it trips and
    its users get 503 at once; off, every request waits for the gateway's timeout."""
    system = impatient_system
    assert system.admin("POST", "/admin/reset").status_code == 200
    if not breaker:
        _off(system, "circuit_breaker")
    users = users_of(system.cells, 0, 12, f"hung{breaker}-")
    # The gateway's own metrics: the admin state would wait on the stopped cell.
    rejected = 'emergence_gateway_breaker_rejections_total{cell="0"}'
    tripped = 'emergence_gateway_breaker_trips_total{cell="0",state="open"}'
    before = {name: _metric(system.url, name) for name in (rejected, tripped)}
    since = time.time()
    pid = _cell_pid(system, 0)
    os.kill(pid, signal.SIGSTOP)
    seconds: list[float] = []
    try:
        with httpx.Client(timeout=10) as client:
            for user in users:
                started = time.monotonic()
                answer = client.get(f"{system.url}/users/{user}/profile")
                seconds.append(time.monotonic() - started)
                assert answer.status_code == 503
        state = _metric(system.url, 'emergence_gateway_breaker_state{cell="0"}')
        grown = {name: _metric(system.url, name) - before[name] for name in (rejected, tripped)}
    finally:
        os.kill(pid, signal.SIGCONT)
        system.admin("POST", "/admin/reset")
    trips = [e for e in events(system, since, "breaker_trip") if e["cell"] == "gateway"]
    if breaker:
        assert state == 1.0 and grown[tripped] == 1 and grown[rejected] >= 6, (state, grown)
        assert max(seconds[-6:]) < 0.3, seconds  # no more waiting on the hung cell
        assert trips and trips[0]["detail"]["breaker"] == "gateway.cell0"
    else:
        assert min(seconds) >= 0.5, seconds
        assert state == 0.0 and grown == {rejected: 0.0, tripped: 0.0} and trips == []
