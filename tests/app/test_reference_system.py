"""The reference system as real processes: routing, cells as failure domains, admin API."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import RunningSystem, start_system


def test_user_routes_answer_from_one_cell(clean_system: RunningSystem) -> None:
    """A user's profile, payments and recommendations are all served by the same cell."""
    url = clean_system.url
    first = httpx.get(f"{url}/users/alice/profile", timeout=5).json()
    second = httpx.get(f"{url}/users/alice/profile", timeout=5).json()
    paid = httpx.post(
        f"{url}/users/alice/payments",
        json={"amount_cents": 500, "idempotency_key": "a-1"},
        timeout=5,
    )
    recs = httpx.get(f"{url}/users/alice/recommendations", timeout=5).json()
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert paid.status_code == 201 and paid.json()["acknowledged"] is True
    assert first["cell"] == second["cell"] == paid.json()["cell"] == recs["cell"]


def test_users_spread_over_every_cell(clean_system: RunningSystem) -> None:
    """Consistent hashing sends some users to each of the cells."""
    cells = {
        httpx.get(f"{clean_system.url}/users/u{i}/recommendations", timeout=5).json()["cell"]
        for i in range(60)
    }
    assert cells == set(range(clean_system.cells))


def test_admin_requires_the_token(clean_system: RunningSystem) -> None:
    """Admin calls without or with a wrong bearer token get 401."""
    assert httpx.get(f"{clean_system.url}/admin/state", timeout=5).status_code == 401
    wrong = httpx.get(
        f"{clean_system.url}/admin/state", headers={"Authorization": "Bearer nope"}, timeout=5
    )
    assert wrong.status_code == 401


def test_token_file_is_private(clean_system: RunningSystem) -> None:
    """The generated token file is readable by its owner only."""
    mode = (clean_system.state_dir / f"admin-token-{clean_system.port}").stat().st_mode & 0o777
    assert mode == 0o600


def test_bad_fault_is_rejected_naming_the_field(clean_system: RunningSystem) -> None:
    """A percentage of 150 answers 400 naming `percentage`, and injects nothing."""
    answer = clean_system.admin(
        "POST", "/admin/faults", json={"kind": "timeout", "percentage": 150, "duration": 30}
    )
    assert answer.status_code == 400 and "percentage" in answer.json()["error"]
    cells = clean_system.admin("GET", "/admin/state").json()["cells"]
    assert all(c["state"]["faults"] == [] for c in cells)


def test_fault_expires_by_itself(clean_system: RunningSystem) -> None:
    """A fault disappears from every cell at the end of its duration, without a rollback."""
    answer = clean_system.admin(
        "POST", "/admin/faults", json={"kind": "error", "percentage": 100, "duration": 1.5}
    )
    assert answer.status_code == 201
    state = clean_system.admin("GET", "/admin/state").json()
    assert all(len(c["state"]["faults"]) == 1 for c in state["cells"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = clean_system.admin("GET", "/admin/state").json()
        if all(c["state"]["faults"] == [] for c in state["cells"]):
            break
        time.sleep(0.2)
    assert all(c["state"]["faults"] == [] for c in state["cells"])


def test_error_fault_fails_requests_of_the_chosen_cell_only(clean_system: RunningSystem) -> None:
    """Errors injected in one cell with defenses off fail its users and nobody else's."""
    clean_system.admin("POST", "/admin/defenses", json={"enabled": False, "names": None})
    # Cellular routing stays on: with it off, the gateway would fail cell 0's users over.
    clean_system.admin(
        "POST", "/admin/defenses", json={"enabled": True, "names": ["cellular_routing"]}
    )
    clean_system.admin(
        "POST",
        "/admin/faults",
        json={
            "kind": "error",
            "percentage": 100,
            "duration": 30,
            "cells": [0],
            "dependency": "recommendations",
        },
    )
    by_cell: dict[int, set[int]] = {}
    for i in range(60):
        answer = httpx.get(f"{clean_system.url}/users/v{i}/recommendations", timeout=5)
        cell = answer.json().get("cell")
        if cell is not None:
            by_cell.setdefault(cell, set()).add(answer.status_code)
    failing = [
        i
        for i in range(60)
        if httpx.get(f"{clean_system.url}/users/v{i}/recommendations", timeout=5).status_code == 503
    ]
    assert failing, "cell 0's users should fail"
    assert by_cell.get(1) == {200} and by_cell.get(2) == {200}


def test_killed_cell_answers_503_and_reset_restarts_it(clean_system: RunningSystem) -> None:
    """A killed cell's users get 503 with Retry-After, others 200; reset brings it back."""
    users: dict[int, str | None] = dict.fromkeys(range(clean_system.cells))
    for i in range(100):
        cell = httpx.get(f"{clean_system.url}/users/k{i}/recommendations", timeout=5).json()["cell"]
        users[cell] = users[cell] or f"k{i}"
    assert clean_system.admin("POST", "/admin/cells/1/kill").json()["killed"] is True
    dead = httpx.get(f"{clean_system.url}/users/{users[1]}/profile", timeout=5)
    alive = httpx.get(f"{clean_system.url}/users/{users[0]}/profile", timeout=5)
    assert dead.status_code == 503 and dead.headers["retry-after"]
    assert alive.status_code == 200
    reset = clean_system.admin("POST", "/admin/reset").json()
    assert reset["restarted"] == [1]
    assert httpx.get(f"{clean_system.url}/users/{users[1]}/profile", timeout=5).status_code == 200


def test_acknowledged_payments_are_all_in_the_databases(clean_system: RunningSystem) -> None:
    """Every payment the gateway saw acknowledged is found in its cell's SQLite file."""
    for i in range(20):
        httpx.post(
            f"{clean_system.url}/users/p{i}/payments",
            json={"amount_cents": 100 + i, "idempotency_key": f"pay-{i}"},
            timeout=5,
        )
    answer = clean_system.admin("GET", "/admin/lost-writes").json()
    assert answer["lost_writes"] == 0
    assert sum(c["acknowledged"] for c in answer["cells"].values()) >= 20


def test_metrics_are_prometheus_text(clean_system: RunningSystem) -> None:
    """The gateway exposes the user-visible latency histogram in seconds."""
    httpx.get(f"{clean_system.url}/users/m/profile", timeout=5)
    text = httpx.get(f"{clean_system.url}/metrics", timeout=5).text
    assert 'emergence_request_duration_seconds_bucket{le="1.0",route="profile"}' in text
    assert "emergence_requests_total" in text


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_every_process_and_port(tmp_path: Path) -> None:
    """SIGTERM on `serve` stops the gateway and every cell: no orphan, no listening port."""
    running = start_system(tmp_path, cells=2)
    state = running.admin("GET", "/admin/state").json()
    ports = [running.port] + [int(c["url"].rsplit(":", 1)[1]) for c in state["cells"]]
    children = running.cell_pids()
    assert len(children) == 2
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in children)
    assert not any(_listening(p) for p in ports)
