"""Every wired defense, in the real reference system: it activates when it should, and not
when it is switched off."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from chaosemergence.app.cell_service import DEFENSES
from tests.app.helpers import cell_state, events, start_configured, users_of, wait_for
from tests.conftest import RunningSystem, stop_system

Request = Callable[[httpx.Client, int], httpx.Response]


def drive(system: RunningSystem, threads: int, seconds: float, send: Request) -> Counter[int]:
    """Send requests from `threads` threads for `seconds`; count the answers' statuses."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(worker: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = worker
            while time.monotonic() < stop:
                status = send(client, i).status_code
                with lock:
                    statuses[status] += 1
                i += threads

    pool = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return statuses


@pytest.fixture
def quiet_system(clean_system: RunningSystem) -> Iterator[RunningSystem]:
    """A clean system whose control loops have seen a second without retries."""
    time.sleep(1.2)  # the next tick measures a calm second (retry growth is then real)
    yield clean_system


def test_state_and_metrics_show_every_defense(clean_system: RunningSystem) -> None:
    """Each cell reports every defense's switch and snapshot; metrics name the new series."""
    cell = cell_state(clean_system, 0)["state"]
    assert set(cell["defenses"]) == set(DEFENSES)
    for section in (
        "throttles",
        "load_shedding",
        "early_expiration",
        "stampede_protection",
        "control_loop",
        "metastable_detector",
        "metastable_recovery",
        "memory",
        "memory_guardrail",
        "gc_breaker",
        "predictive_restart",
        "jitter",
    ):
        assert cell[section], section
    assert cell["memory"]["limit_bytes"] == 256 * 1024 * 1024
    url = cell_state(clean_system, 0)["url"]
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for name in (
        "emergence_shed_requests_total",
        "emergence_throttled_calls_total",
        "emergence_memory_used_bytes",
        "emergence_memory_limit_bytes",
        "emergence_recovery_phase",
        "emergence_complexity_score",
        "emergence_early_refreshes_total",
        "emergence_pattern_probability",
    ):
        assert name in text, name
    gateway = httpx.get(f"{clean_system.url}/metrics", timeout=5).text
    assert "emergence_correlation " in gateway and 'emergence_cell_up{cell="0"} 1.0' in gateway


def test_internal_route_needs_the_token(clean_system: RunningSystem) -> None:
    """Only the system's own processes (with the admin token) may call the shared dependency."""
    assert httpx.post(f"{clean_system.url}/internal/shared/0", timeout=5).status_code == 401
    # The shared dependency is data plane: on the gateway's main listener, not the admin one.
    headers = {"Authorization": f"Bearer {clean_system.token}"}
    answer = httpx.post(f"{clean_system.url}/internal/shared/0", headers=headers, timeout=5)
    assert answer.status_code == 200 and answer.json()["result"] == "success"


def test_a_shared_fault_reaches_every_cell(clean_system: RunningSystem) -> None:
    """An error fault on the shared dependency lives in the gateway; every cell's job fails."""
    fault = clean_system.admin(
        "POST",
        "/admin/faults",
        json={"kind": "error", "percentage": 100, "duration": 10, "dependency": "shared_config"},
    ).json()
    assert fault["target"] == "gateway" and fault["cells"] == []
    wait_for(
        lambda: [c["state"]["shared_dependency"]["failures"] for c in _cells(clean_system)],
        lambda failures: all(f > 0 for f in failures),
        10,
        "every cell's shared-config job failing",
    )
    assert clean_system.admin("DELETE", "/admin/faults").json()["cleared"] >= 1


def _cells(system: RunningSystem) -> list[dict[str, Any]]:
    cells: list[dict[str, Any]] = system.admin("GET", "/admin/state").json()["cells"]
    return cells


@pytest.mark.parametrize("throttle", [True, False])
def test_adaptive_throttle_rejects_locally_when_the_backend_refuses(
    clean_system: RunningSystem, throttle: bool
) -> None:
    """A dependency that refuses everything: the throttle rejects most calls locally."""
    users = users_of(clean_system.cells, 0, 5, "thr")
    # The breaker and the metastable recovery (which pauses ingress once every call fails)
    # would answer before the throttle is asked: off, so every call reaches it.
    off = ["circuit_breaker", "metastable_detector", "metastable_recovery", "load_shedding"]
    off += [] if throttle else ["adaptive_throttle"]
    clean_system.admin("POST", "/admin/defenses", json={"enabled": False, "names": off})
    # A counter: it survives resets, so the test judges what it adds.
    before = cell_state(clean_system, 0)["state"]["throttles"]["recommendations"]
    since = time.time()
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
    with httpx.Client(timeout=5) as client:
        answers = [
            client.get(f"{clean_system.url}/users/{users[i % 5]}/recommendations")
            for i in range(30)
        ]
    throttled = cell_state(clean_system, 0)["state"]["throttles"]["recommendations"]
    rejected = throttled["local_rejections"] - before["local_rejections"]
    activations = [e for e in events(clean_system, since, "adaptive_throttle") if e["cell"] == 0]
    if throttle:
        assert activations and rejected >= 15
        # A locally rejected call is answered by the fallback.
        assert sum(1 for a in answers if a.json().get("degraded")) >= 15
        # The activation reached Prometheus through the defenses' metrics recorder.
        metrics = httpx.get(f"{cell_state(clean_system, 0)['url']}/metrics", timeout=5).text
        series = (
            'emergence_defense_events_total{cell="0",defense="adaptive_throttle",kind="activated"}'
        )
        assert series in metrics, metrics[:2000]
    else:
        assert activations == [] and rejected == 0
        # Every call reached the failing dependency (429: the phase defenses may shed some).
        assert all(a.status_code in (503, 429) for a in answers)


@pytest.mark.parametrize("shedding", [True, False])
def test_a_retry_storm_sheds_low_priority_work(quiet_system: RunningSystem, shedding: bool) -> None:
    """Retry storm onset: phase defenses shed 30% of recommendations (429), never payments."""
    system = quiet_system
    users = users_of(system.cells, 0, 6, "shed")
    if not shedding:
        system.admin("POST", "/admin/defenses", json={"enabled": False, "names": ["load_shedding"]})
    before = cell_state(system, 0)["state"]["load_shedding"]["refused"]["load_shedding"]
    since = time.time()
    system.admin(
        "POST",
        "/admin/faults",
        json={
            "kind": "timeout",
            "percentage": 100,
            "duration": 30,
            "cells": [0],
            "dependency": "recommendations",
        },
    )
    statuses = drive(
        system,
        4,
        3.0,
        lambda client, i: client.get(f"{system.url}/users/{users[i % 6]}/recommendations"),
    )
    paid = [
        httpx.post(
            f"{system.url}/users/{users[0]}/payments",
            json={"amount_cents": 100, "idempotency_key": f"shed-{shedding}-{i}"},
            timeout=10,
        ).status_code
        for i in range(5)
    ]
    phase = [e for e in events(system, since, "phase_defenses") if e["cell"] == 0]
    shed = [e for e in events(system, since, "load_shedding") if e["cell"] == 0]
    assert phase and phase[0]["kind"] == "activated"
    assert 429 not in paid
    if shedding:
        assert shed and shed[0]["kind"] == "activated"
        assert statuses[429] > 0
        refused = cell_state(system, 0)["state"]["load_shedding"]["refused"]
        assert refused["load_shedding"] - before == statuses[429]
    else:
        assert shed == [] and statuses[429] == 0


@pytest.mark.parametrize("protection", [True, False])
def test_stampede_protection_after_a_cache_flush(
    clean_system: RunningSystem, protection: bool
) -> None:
    """A herd on hot keys flushed while every refill fails: misses and a surge over the
    calm baseline, 2 of the 4 stampede indicators, fire."""
    system = clean_system
    hot = users_of(system.cells, 0, 3, "herd")
    off = ["cache_prewarming"] + ([] if protection else ["stampede_protection"])
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": off})

    def calm(client: httpx.Client, i: int) -> httpx.Response:
        time.sleep(0.1)  # at most 10 requests per second: the detector's baseline
        return client.get(f"{system.url}/users/{hot[i % 3]}/profile")

    drive(system, 1, 3.0, calm)
    wait_for(
        lambda: cell_state(system, 0)["state"]["cache"]["hot_keys"],
        lambda keys: len(keys) == 3,
        5,
        "the three keys hot",
    )
    since = time.time()
    system.admin(
        "POST",
        "/admin/faults",
        json={
            "kind": "error",
            "percentage": 100,
            "duration": 4,
            "cells": [0],
            "dependency": "database",
        },
    )
    system.admin("POST", "/admin/cache/invalidate")
    # The herd: 8 callers with no pause, each miss failing fast, far above 5x the baseline.
    drive(system, 8, 2.5, lambda client, i: client.get(f"{system.url}/users/{hot[i % 3]}/profile"))
    found = [e for e in events(system, since, "stampede_protection") if e["cell"] == 0]
    if protection:
        assert found and found[0]["kind"] == "activated", found
        # 2 of the seed's 4 indicators: the misses and the surge (latency may cross too).
        indicators = {"miss_rate", "request_rate", "waiters", "latency"}
        named = {i for i in indicators if i in found[0]["reason"]}
        assert len(named) >= 2, found[0]["reason"]
    else:
        assert found == []


def _correlation(system: RunningSystem, window: float = 8) -> float:
    value: float = system.admin("GET", f"/admin/correlation?window={window}").json()["correlation"]
    return value


# The synchronization experiment's shared dependency and pollers (experiments/synchronization).
SYNC_SETTINGS: dict[str, object] = {
    "shared_pollers_per_cell": 8,
    "shared_poll_interval_seconds": 2.0,
    "shared_poll_retry_seconds": 0.2,
    "shared_read_timeout_ms": 100,
    "shared_dependency": {
        "concurrency": 2,
        "queue_limit": 16,
        "service_time_ms": 30,
        "call_timeout_ms": 1000,
    },
}


@pytest.fixture(scope="module")
def sync_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_configured(tmp_path_factory.mktemp("sync"), SYNC_SETTINGS, cells=4)
    yield running
    stop_system(running)


def _config_reads_failing(system: RunningSystem, seconds: float) -> float:
    """Share of users' configuration reads that failed: one every 100 ms for `seconds`."""
    failed = sent = 0
    with httpx.Client(timeout=5) as client:
        for i in range(int(seconds / 0.1)):
            due = time.monotonic() + 0.1
            failed += client.get(f"{system.url}/users/u{i}/config").status_code >= 500
            sent += 1
            time.sleep(max(0.0, due - time.monotonic()))
    return failed / sent


# The naive timers' phases are random, so the calm state is judged against the aligned
# one (not against fixed bounds, which chance missed now and then: calm correlation 0.52
# against 0.5, then 0.72 against 0.7 on a loaded machine; calm read failures 18%); one
# rerun stays for a machine too loaded to keep the 100 ms read cadence.
@pytest.mark.flaky(reruns=1)
def test_correlation_breaking(sync_system: RunningSystem) -> None:
    """No jitter alone aligns nothing; an outage of the shared dependency does, for good, and
    users' configuration reads fail behind the aligned peaks; the jitter defense, switched
    on, rephases every timer and the correlation falls below 0.3."""
    system = sync_system
    assert system.admin("GET", "/admin/correlation?window=0").status_code == 400
    removed_at = time.time()
    # The shared-config poll's breaker would open during the outage and keep the pollers
    # off the dependency for its open duration: a defense of its own, not the one tested.
    system.admin(
        "POST", "/admin/defenses", json={"enabled": False, "names": ["jitter", "circuit_breaker"]}
    )
    system.admin("POST", "/admin/jitter", json={"enabled": False})
    time.sleep(8)  # four periods of naive timers: each keeps its own phase
    # Random phases: 8 pollers a cell rarely line up with another cell's, but may partly.
    calm_correlation = _correlation(system)
    calm = _config_reads_failing(system, 6)
    system.admin(
        "POST",
        "/admin/faults",
        json={"kind": "error", "percentage": 100, "duration": 3, "dependency": "shared_config"},
    )
    wait_for(lambda: _correlation(system), lambda c: c >= 0.7, 30, "correlation >= 0.7")
    aligned = _config_reads_failing(system, 8)
    assert aligned >= 0.1 and aligned > 1.5 * calm, (aligned, calm)
    # Still in step, long after the outage: nothing moves fixed timers apart.
    reading = system.admin("GET", "/admin/correlation?window=6").json()
    assert reading["correlation"] >= 0.7 and reading["peak_to_mean"] >= 8.0, reading
    # The outage aligned the cells; removing jitter alone had not.
    assert calm_correlation < reading["correlation"], (calm_correlation, reading)
    assert events(system, removed_at, "jitter") == []  # nobody re-adds it when off
    since = time.time()
    system.admin("POST", "/admin/defenses", json={"enabled": True, "names": ["jitter"]})
    wait_for(lambda: _correlation(system, 6), lambda c: c < 0.3, 30, "correlation < 0.3")
    activated = {e["cell"] for e in events(system, since, "jitter") if e["kind"] == "activated"}
    assert activated == set(range(system.cells))
    state = cell_state(system, 0)["state"]
    assert state["jitter_removed"] is False and state["jitter_restored_by"]
    jobs = state["shared_dependency"]["jobs"]
    assert all(job["rephased"] >= 1 for name, job in jobs.items() if name.startswith("poll_"))
    rephased = _config_reads_failing(system, 6)
    assert rephased < aligned / 2, (rephased, aligned)


@pytest.mark.parametrize("precompute", [True, False])
def test_computations_start_after_jitter_while_cells_correlate(
    sync_system: RunningSystem, precompute: bool
) -> None:
    """Cells in step after a shared outage (correlation above 0.5): every profile computation
    waits 0-100 ms first (the seed's coalescer jitter); off, none does."""
    system = sync_system
    assert system.admin("POST", "/admin/reset").status_code == 200
    # Keep the cells in step: no jitter defense, no poll breaker.
    off = ["jitter", "circuit_breaker"] + ([] if precompute else ["precompute_jitter"])
    system.admin("POST", "/admin/defenses", json={"enabled": False, "names": off})
    system.admin("POST", "/admin/jitter", json={"enabled": False})

    def told() -> float:
        value: float = cell_state(system, 0)["state"]["precompute_jitter"]["correlation"]
        return value

    # The setup, not the subject (test_correlation_breaking is): on a loaded machine one
    # outage may leave the cells out of step, so try up to three.
    for attempt in range(3):
        system.admin(
            "POST",
            "/admin/faults",
            json={"kind": "error", "percentage": 100, "duration": 3, "dependency": "shared_config"},
        )
        try:
            wait_for(told, lambda c: c > 0.6, 20, "cell 0 told that the cells correlate")
            break
        except AssertionError:
            if attempt == 2:
                raise
    before = cell_state(system, 0)["state"]["precompute_jitter"]
    since = time.time()
    with httpx.Client(timeout=10) as client:
        for user in users_of(system.cells, 0, 20, f"pcj{precompute}-"):
            assert client.get(f"{system.url}/users/{user}/profile").status_code == 200
    after = cell_state(system, 0)["state"]["precompute_jitter"]
    delays = after["delays"] - before["delays"]
    found = [e for e in events(system, since, "precompute_jitter") if e["cell"] == 0]
    if precompute:
        # Every computation while the pushed correlation stays above 0.5; it may dip below
        # on a loaded machine before the twenty are done.
        assert delays >= 5, after
        assert 0 < after["seconds"] - before["seconds"] <= 0.1 * delays
        assert found and found[0]["kind"] == "activated"
    else:
        assert delays == 0 and found == []
