"""Memory pressure in one cell of the real system: guarded and restarted, or dead at its limit."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

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
        (9, {"megabytes_per_second": 8, "duration": 5}, "cell"),
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
            lambda c: c["planned_restarts"] > before["planned_restarts"] and c["state"],
            20,
            "a predictive restart",
        )
        time.sleep(0.5)  # traffic reaches the new process
    assert after["last_exit"]["reason"] == "predictive_restart"
    assert after["url"] == before["url"]  # same socket
    assert after["state"]["memory"]["ballast_bytes"] == 0
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
