"""The embedded admin API (issue 11): the extension's own actions and probes drive a service
that mounts ``EmergenceAdmin``, unchanged, over real HTTP.

A real uvicorn server on a thread serves a small Starlette app with one guarded dependency,
one cache and one timer; the actions and probes are the extension's, called as Chaos
Toolkit calls them (configuration and secrets). Clock-driven behaviour (self-expiring
faults, the lease) uses an injected clock, in process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from chaoslib.exceptions import ActivityFailed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chaosemergence import actions, probes, rollbacks
from chaosemergence.defenses import (
    BreakerConfig,
    CircuitBreaker,
    Guard,
    Jitter,
    RetryPolicy,
    SingleFlight,
)
from chaosemergence.embed import DependencyFault, EmergenceAdmin
from chaosemergence.lease import release_lease
from tests.conftest import free_port

TOKEN = "embedded-admin-token-0123456789"


@dataclass
class Service:
    url: str
    admin: EmergenceAdmin
    guard: Guard
    jitter: Jitter
    coalesce: SingleFlight
    cache: dict[int, str]
    configuration: dict[str, Any]
    secrets: dict[str, Any]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=5)

    def admin_call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=5, **kwargs)


def _build() -> tuple[Starlette, EmergenceAdmin, Guard, Jitter, SingleFlight, dict[int, str]]:
    admin = EmergenceAdmin(token=TOKEN)
    breaker = CircuitBreaker(
        "db", BreakerConfig(failure_threshold=3, open_durations=(30, 30, 30)), events=admin.events
    )
    guard = Guard(name="db", breaker=breaker, retry=RetryPolicy(1))
    db = admin.dependency("db", guard=guard)
    cache = {i: f"v{i}" for i in range(7)}
    admin.cache("values", invalidate=lambda: _drop(cache))
    jitter = Jitter("uniform", 0.5)
    admin.timer("refresh", jitter=jitter)
    coalesce = SingleFlight()
    admin.defense("request_coalescing", coalesce)

    async def read(_request: Request) -> JSONResponse:
        started = time.monotonic()

        async def answer() -> str:
            return "fresh"

        try:
            value = await db.call(answer)
        except Exception as error:
            admin.recorder.request("profile", "failure", time.monotonic() - started)
            return JSONResponse({"error": type(error).__name__}, status_code=503)
        admin.recorder.request("profile", "success", time.monotonic() - started)
        return JSONResponse({"value": value})

    app = Starlette(routes=[Route("/read", read), *admin.routes()], lifespan=admin.lifespan)
    return app, admin, guard, jitter, coalesce, cache


def _drop(cache: dict[int, str]) -> int:
    removed = len(cache)
    cache.clear()
    return removed


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    monkeypatch.setenv("CHAOSEMERGENCE_HOME", str(tmp_path))
    app, admin, guard, jitter, coalesce, cache = _build()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test service did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    configuration = {"emergence_url": url, "emergence_state_dir": str(tmp_path)}
    secrets = {"emergence": {"admin_token": TOKEN}}
    try:
        yield Service(url, admin, guard, jitter, coalesce, cache, configuration, secrets)
    finally:
        release_lease()  # a LeaseKeeper thread started by a weakening action
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_the_extensions_actions_and_probes_drive_the_embedded_api(service: Service) -> None:
    cfg, sec = service.configuration, service.secrets
    assert service.get("/read").json() == {"value": "fresh"}

    fault = actions.inject_errors(100, duration=60, dependency="db", configuration=cfg, secrets=sec)
    assert fault["cells"] == [0] and fault["id"]
    # Three failures open the breaker (no fallback here: the caller sees the error).
    codes = [service.get("/read").status_code for _ in range(5)]
    assert codes == [503] * 5
    assert service.guard.breaker is not None and service.guard.breaker.state.value == "open"
    assert probes.check_defense_activation(
        ["circuit_breaker"], since=0, configuration=cfg, secrets=sec
    )
    assert rollbacks.clear_faults(configuration=cfg, secrets=sec) == {"cleared": 1}

    switched = actions.set_defenses(False, configuration=cfg, secrets=sec)
    assert sorted(switched["names"]) == ["circuit_breaker", "request_coalescing", "retry_budget"]
    assert not service.guard.breaker.enabled and not service.coalesce.enabled
    assert service.admin.lease.held  # weakened: a lease that puts it back if nobody renews

    assert actions.remove_all_jitter(configuration=cfg, secrets=sec) == {
        "cells": 1,
        "jitter": False,
    }
    assert service.jitter.enabled is False
    assert actions.restore_jitter(configuration=cfg, secrets=sec)["jitter"] is True
    assert service.jitter.enabled is True

    assert actions.invalidate_cache_globally(configuration=cfg, secrets=sec) == {
        "removed": 7,
        "prewarming": 0,
        "prewarmed": 0,
    }
    assert service.cache == {}

    actions.inject_latency(5, duration=60, dependency="all", configuration=cfg, secrets=sec)
    reset = rollbacks.reset_all_defenses(configuration=cfg, secrets=sec)
    assert reset["faults_cleared"] == 1 and reset["cells_reset"] == 1
    assert service.guard.breaker.enabled and service.coalesce.enabled
    assert not service.admin.lease.held
    assert probes.defense_state(configuration=cfg, secrets=sec)["cells"][0]["state"][
        "defenses"
    ] == {
        "circuit_breaker": True,
        "request_coalescing": True,
        "retry_budget": True,
    }


def test_windowed_probes_read_the_embedded_metrics_window(service: Service) -> None:
    cfg, sec = service.configuration, service.secrets
    for _ in range(30):
        assert service.get("/read").status_code == 200
    actions.inject_errors(100, duration=60, dependency="db", configuration=cfg, secrets=sec)
    for _ in range(10):
        assert service.get("/read").status_code == 503
    # 10 of 40 requests failed: what measure_failure_radius reads from /admin/increase.
    assert probes.measure_failure_radius(window=30, configuration=cfg, secrets=sec) == 25.0
    with pytest.raises(ActivityFailed, match="min_requests"):
        probes.measure_failure_radius(window=30, min_requests=41, configuration=cfg, secrets=sec)
    metrics = service.get("/metrics")  # no token: Prometheus scrapes it
    assert metrics.status_code == 200
    assert 'emergence_requests_total{cell="0",outcome="failure",route="profile"} 10.0' in (
        metrics.text
    )


def test_bad_input_is_a_4xx_naming_the_field_and_applies_nothing(service: Service) -> None:
    call = service.admin_call
    assert httpx.post(f"{service.url}/admin/reset", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{service.url}/admin/state", headers=wrong, timeout=5).status_code == 401

    answer = call(
        "POST", "/admin/defenses", json={"enabled": False, "names": ["circuit_breaker", "x"]}
    )
    assert answer.status_code == 400 and "names" in answer.json()["error"]
    assert service.guard.breaker is not None and service.guard.breaker.enabled
    answer = call("POST", "/admin/defenses", json={"enabled": False, "lease_seconds": 0})
    assert answer.status_code == 400 and "lease_seconds" in answer.json()["error"]
    assert service.guard.breaker.enabled and not service.admin.lease.held

    for body, field in [
        ({"kind": "error", "percentage": 150, "duration": 5}, "percentage"),
        ({"kind": "melt", "duration": 5}, "kind"),
        ({"kind": "error", "duration": 5, "dependency": "cache"}, "dependency"),
        ({"kind": "latency", "duration": 5}, "latency_ms"),
        ({"kind": "error", "duration": 5, "cells": [3]}, "cells"),
        ({"kind": "error", "duration": -1}, "duration"),
    ]:
        answer = call("POST", "/admin/faults", json=body)
        assert answer.status_code == 400 and field in answer.json()["error"], (body, answer.text)
    assert call("POST", "/admin/faults", content=b"[1]").status_code == 400
    assert service.admin.faults.active() == []

    answer = call("POST", "/admin/jitter", json={"enabled": "no"})
    assert answer.status_code == 400 and "enabled" in answer.json()["error"]
    assert service.jitter.enabled
    answer = call("GET", "/admin/increase", params={"seconds": 0})
    assert answer.status_code == 400 and "seconds" in answer.json()["error"]
    answer = call("GET", "/admin/events", params={"since": "yesterday"})
    assert answer.status_code == 400 and "since" in answer.json()["error"]
    answer = call("POST", "/admin/lease", json={"seconds": "long"})
    assert answer.status_code == 400 and "seconds" in answer.json()["error"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_faults_expire_by_themselves_and_the_lease_puts_defenses_back() -> None:
    clock = FakeClock()
    admin = EmergenceAdmin(token=TOKEN, clock=clock)
    breaker = CircuitBreaker("db")
    db = admin.dependency("db", guard=Guard(name="db", breaker=breaker))
    app = admin.admin_app()
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        fault = {"kind": "error", "percentage": 100, "duration": 10, "dependency": "db"}
        assert (await c.post("/faults", json=fault)).status_code == 201

        async def ok() -> str:
            return "ok"

        with pytest.raises(DependencyFault):
            await db.attempt(ok)
        clock.now += 10.5  # the fault's duration is over: nobody has to clear it
        assert await db.attempt(ok) == "ok"

        off = {"enabled": False, "lease_seconds": 5}
        assert (await c.post("/defenses", json=off)).json()["lease"]["held"] is True
        assert breaker.enabled is False
        clock.now += 4
        admin.tick()
        assert breaker.enabled is False  # renewed or not, the lease still runs
        clock.now += 2
        admin.tick()  # expired unrenewed: every defense back on, and an event says so
        assert breaker.enabled is True
        assert [e.defense for e in admin.events.all()] == ["lease"]
        assert (await c.get("/lease")).json()["expirations"] == 1


async def test_dependency_faults_hit_the_guard_and_latency_adds_time() -> None:
    admin = EmergenceAdmin(token=TOKEN)
    guard = Guard(name="db", retry=RetryPolicy(3, sleep=lambda _s: asyncio.sleep(0)))
    db = admin.dependency("db", guard=guard)
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        return calls

    admin.faults.add({"kind": "error", "dependency": "db", "percentage": 100, "duration": 60})
    with pytest.raises(DependencyFault):
        await db.call(work)
    assert calls == 0 and db.faulted == 3  # every attempt drew the fault; retries saw it
    admin.faults.clear()
    admin.faults.add(
        {
            "kind": "latency",
            "dependency": "all",
            "percentage": 100,
            "duration": 60,
            "latency_ms": 50,
        }
    )
    started = time.monotonic()
    assert await db.call(work) == 1
    assert time.monotonic() - started >= 0.05


def test_registration_is_explicit_and_checked() -> None:
    with pytest.raises(ValueError, match="token"):
        EmergenceAdmin(token="short")
    admin = EmergenceAdmin(token=TOKEN)
    admin.dependency("db")
    with pytest.raises(ValueError, match="already registered"):
        admin.dependency("db")
    with pytest.raises(ValueError, match="'all'"):
        admin.dependency("all")
    with pytest.raises(ValueError, match="enabled"):
        admin.defense("my_defense", object())  # type: ignore[arg-type]
    assert admin.defense_names == []  # a dependency without a guard switches nothing


def test_without_the_extra_the_import_names_it() -> None:
    """A service without Starlette (or prometheus-client) is told which extra to install."""
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "try:\n"
        "    import chaosemergence.embed\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "pip install 'chaostoolkit-emergence[embed]'" in result.stdout, result.stderr


async def test_a_fastapi_service_mounts_it_the_documented_way() -> None:
    """docs/your-service.md: ``app.mount("/admin", admin.admin_app())`` and
    ``app.add_route("/metrics", admin.metrics)`` in a FastAPI app, with its lifespan."""
    from fastapi import FastAPI

    admin = EmergenceAdmin(token=TOKEN)
    breaker = CircuitBreaker("db")
    admin.dependency("db", guard=Guard(name="db", breaker=breaker))
    app = FastAPI(lifespan=admin.lifespan)
    app.mount("/admin", admin.admin_app())
    app.add_route("/metrics", admin.metrics)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        off = await client.post("/admin/defenses", json={"enabled": False}, headers=headers)
        assert off.status_code == 200 and breaker.enabled is False
        assert (await client.post("/admin/reset", headers=headers)).status_code == 200
        assert breaker.enabled is True
        assert (await client.get("/admin/increase", headers=headers)).status_code == 200
        assert (await client.get("/admin/state")).status_code == 401
        assert (await client.get("/metrics")).status_code == 200


def test_a_cache_drop_a_service_did_not_confirm_fails_the_action(service: Service) -> None:
    """The herd's trigger, unconfirmed, proves nothing: the action fails and names the cache."""

    def broken() -> int:
        raise OSError("cache server unreachable")

    service.admin.cache("remote", invalidate=broken)
    with pytest.raises(ActivityFailed, match=r"did not confirm.*cache server unreachable"):
        actions.invalidate_cache_globally(
            configuration=service.configuration, secrets=service.secrets
        )


async def test_every_cache_is_dropped_even_when_one_callback_fails() -> None:
    admin = EmergenceAdmin(token=TOKEN)
    entries = {1: "a", 2: "b"}

    def broken() -> int:
        raise OSError("cache server unreachable")

    async def drop() -> int:  # an async callback is awaited
        return _drop(entries)

    async def refill() -> int:
        entries.update({1: "a"})
        return 1

    admin.cache("remote", invalidate=broken)
    admin.cache("local", invalidate=drop, prewarm=refill)
    transport = httpx.ASGITransport(app=admin.admin_app())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=headers) as c:
        cell = (await c.post("/cache/invalidate")).json()["cells"]["0"]
    assert cell["removed"] == 2 and cell["prewarmed"] == 1
    assert "cache server unreachable" in cell["errors"]["remote"]
    assert entries == {1: "a"}


async def test_a_host_adds_its_history_reset_work_and_collectors() -> None:
    """``history`` (earlier processes' events, listed first), ``on_reset`` (the host's own
    reset work, its counts in the answer, run after the defenses are back on) and a given
    ``recorder`` (the host's collector's series on ``/metrics``): the hooks a reference cell
    uses, in a system of one cell."""
    from prometheus_client import CollectorRegistry, Counter

    from chaosemergence.defenses.metrics import PrometheusRecorder

    registry = CollectorRegistry()
    Counter("host_jobs", "The host's own series.", registry=registry).inc()
    earlier = {
        "defense": "breaker",
        "kind": "activated",
        "at": 1.0,
        "reason": "before",
        "detail": {},
    }
    admin = EmergenceAdmin(
        token=TOKEN,
        recorder=PrometheusRecorder(registry),
        history=lambda since: [earlier] if since <= 1.0 else [],
    )
    breaker = CircuitBreaker("db", events=admin.events)
    admin.defense("circuit_breaker", breaker)
    seen_on: list[bool] = []

    async def drain() -> dict[str, int]:
        seen_on.append(breaker.enabled)
        return {"queued_calls_drained": 4}

    admin.on_reset(drain)
    admin.events.record("circuit_breaker", "activated", "now")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=Starlette(routes=admin.routes())),
        base_url="http://t",
        headers=headers,
    ) as client:
        events = (await client.get("/admin/events", params={"since": 0})).json()["events"]
        assert [(e["reason"], e["cell"]) for e in events] == [("before", "0"), ("now", "0")]
        later = (await client.get("/admin/events", params={"since": 2})).json()["events"]
        assert [e["reason"] for e in later] == ["now"]

        await client.post("/admin/defenses", json={"enabled": False})
        reset = (await client.post("/admin/reset")).json()["cells"]["0"]
        assert reset["queued_calls_drained"] == 4 and seen_on == [True]
        assert reset["defenses"] == {"circuit_breaker": True}
        assert "host_jobs_total 1.0" in (await client.get("/metrics")).text
    with pytest.raises(ValueError, match="hook"):
        admin.on_reset("not callable")  # type: ignore[arg-type]
