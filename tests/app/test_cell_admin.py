"""A cell's generic admin routes are the embedding's (issue 11): faults, defense switches,
jitter removal, cache invalidation, the reset, the events, ``/admin/increase`` and
``/metrics`` of a reference cell are served by ``EmergenceAdmin`` (``cell_routes`` and
``metrics``) with the cell's dependencies, cache, timers, defenses, reset work, earlier
events and collector registered, and answer the gateway's fan-out with the shapes it reads.

A real CellService and its real app, called in process over ASGI (no sockets: the live
system's answers through the gateway are tests/app/test_admin_api.py's and
tests/extension/test_activities.py's).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from chaosemergence.app.cell_app import create_cell_app
from chaosemergence.app.cell_service import CellService
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.switches import DEFENSES
from chaosemergence.defenses.metrics import PrometheusRecorder
from chaosemergence.embed import EmergenceAdmin

TOKEN = "cell-admin-token-0123456789"


@pytest.fixture
async def cell(tmp_path: Path) -> AsyncIterator[tuple[CellService, httpx.AsyncClient, list[Route]]]:
    # One registry for the defenses' series and the cell's collector, as cell_main has it.
    recorder = PrometheusRecorder(CollectorRegistry(), cell="0")
    service = CellService(
        0, SystemSettings(cells=2), tmp_path / "cell-0.sqlite3", recorder=recorder
    )
    app = create_cell_app(service, TOKEN, recorder=recorder)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cell", headers=headers, timeout=10
    ) as client:
        routes = [r for r in app.routes if isinstance(r, Route)]
        yield service, client, routes
    await service.stop()


def _endpoint_owner(routes: list[Route], path: str, method: str) -> object:
    matching = [r for r in routes if r.path == path and method in (r.methods or ())]
    assert len(matching) == 1, (path, method, matching)  # no second route shadowing it
    return getattr(matching[0].endpoint, "__self__", None)


def _served_by_embedding(routes: list[Route], path: str, method: str) -> bool:
    return isinstance(_endpoint_owner(routes, path, method), EmergenceAdmin)


#: What the embedding serves for a cell, and what stays the reference system's own.
EMBEDDED = [
    ("/admin/faults", "POST"),
    ("/admin/faults", "DELETE"),
    ("/admin/defenses", "POST"),
    ("/admin/jitter", "POST"),
    ("/admin/cache/invalidate", "POST"),
    ("/admin/reset", "POST"),
    ("/admin/events", "GET"),
    ("/admin/increase", "GET"),
    ("/metrics", "GET"),
]
OWN = [
    ("/admin/memory-pressure", "POST"),
    ("/admin/signals", "POST"),
    ("/admin/metastable", "GET"),
    ("/admin/metastable/resume", "POST"),
    ("/admin/state", "GET"),
    ("/admin/payments/missing", "POST"),
    ("/admin/process", "GET"),
]


async def test_the_generic_routes_are_the_embeddings(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """Every generic route is an endpoint of one EmergenceAdmin, with no second route on the
    same path; the reference system's own (memory pressure, metastable, state, ...) are not."""
    _, _, routes = cell
    owners = {id(_endpoint_owner(routes, path, method)) for path, method in EMBEDDED}
    assert len(owners) == 1
    for path, method in EMBEDDED:
        assert _served_by_embedding(routes, path, method), (path, method)
    for path, method in OWN:
        assert not _served_by_embedding(routes, path, method), (path, method)


async def test_a_fault_reaches_the_cells_own_dependencies(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """The gateway's fault (with its id) lands in the table the simulated dependencies draw
    from; a bad field is a 400 naming it; clearing removes it."""
    service, client, _ = cell
    fault = {
        "kind": "error",
        "percentage": 100.0,
        "duration": 60.0,
        "dependency": "database",
        "latency_ms": 0.0,
        "id": "fault-7",
    }
    answer = await client.post("/admin/faults", json=fault)
    assert answer.status_code == 201, answer.text
    assert answer.json()["id"] == "fault-7" and 0 < answer.json()["remaining_seconds"] <= 60
    assert [f.id for f in service.faults.active()] == ["fault-7"]
    assert service.faults.draw("database", service.rng)  # what the database's calls see

    bad = await client.post("/admin/faults", json={**fault, "dependency": "nope"})
    assert bad.status_code == 400 and bad.json()["field"] == "dependency"
    assert (await client.delete("/admin/faults", params={"id": "fault-7"})).json() == {"cleared": 1}
    assert service.faults.active() == []


async def test_defenses_and_jitter_switch_the_cells_own_objects(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """One request switches the named defenses together (the cell's apply_switches), the
    jitter removal sets the cell's timers naive; unknown names are refused by name."""
    service, client, _ = cell
    answer = await client.post(
        "/admin/defenses", json={"enabled": False, "names": ["circuit_breaker", "jitter"]}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["changed"] == ["circuit_breaker", "jitter"] and body["enabled"] is False
    assert not service.enabled["circuit_breaker"] and not service.enabled["jitter"]
    assert not any(b.enabled for b in service.clients.all_breakers())
    assert body["defenses"]["circuit_breaker"] is False and body["defenses"]["load_shedding"]

    refused = await client.post("/admin/defenses", json={"enabled": False, "names": ["nope"]})
    assert refused.status_code == 400 and refused.json()["field"] == "names[0]"

    removed = await client.post("/admin/jitter", json={"enabled": False})
    assert removed.json()["jitter_removed"] is True and service.timers.removed
    back = await client.post("/admin/jitter", json={"enabled": True})
    assert back.json()["jitter_removed"] is False and not service.timers.removed

    on = await client.post("/admin/defenses", json={"enabled": True, "names": None})
    assert sorted(on.json()["changed"]) == sorted(DEFENSES)
    assert all(service.enabled.values()) and all(b.enabled for b in service.clients.all_breakers())


async def test_cache_invalidation_answers_what_the_cell_dropped(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """The cell's own invalidation runs (its counts: removed, prewarming in the background)."""
    service, client, _ = cell
    for user in ("1", "2", "3"):
        assert (await service.profile(user)).status == 200
    answer = await client.post("/admin/cache/invalidate")
    assert answer.status_code == 200, answer.text
    assert answer.json()["removed"] == 3 and "prewarming" in answer.json()
    assert not service.profiles.cache.is_fresh("profile:1")


async def test_the_routes_need_the_cells_token(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    _, client, _ = cell
    answer = await client.post(
        "/admin/jitter", json={"enabled": False}, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401


async def test_the_reset_is_the_embeddings_with_the_cells_own_work(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """The embedding clears the faults and puts defenses and jitter back; the cell's hook
    closes its breakers, forgets who restored the jitter and prewarms: one answer with the
    counts the rollbacks and actions sum (faults_cleared, prewarmed)."""
    service, client, _ = cell
    fault = {"kind": "error", "percentage": 50.0, "duration": 60.0, "dependency": "database"}
    assert (await client.post("/admin/faults", json=fault)).status_code == 201
    await client.post("/admin/defenses", json={"enabled": False, "names": ["load_shedding"]})
    await client.post("/admin/jitter", json={"enabled": False})
    breaker = service.clients.all_breakers()[0]
    breaker.force_open("test")
    assert breaker.state.value == "open"
    service.timers.restored_by = "the control loop"

    answer = await client.post("/admin/reset")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["faults_cleared"] == 1 and service.faults.active() == []
    assert {"ballast_released_bytes", "queued_calls_drained", "prewarmed"} <= set(body)
    assert body["defenses"] == dict.fromkeys(sorted(DEFENSES), True)
    assert all(service.enabled.values()) and not service.timers.removed
    assert breaker.state.value == "closed" and service.timers.restored_by is None


async def test_the_events_include_the_earlier_processes(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """The cell's earlier processes' events (its history) come first, then this process's;
    a plain list, as the gateway merges it; non-finite numbers are null; a bad since is a
    400 naming it."""
    service, client, _ = cell
    earlier = {"defense": "breaker", "kind": "activated", "at": 5.0, "reason": "old", "detail": {}}
    service.previous_events = [earlier]
    service.events.record("load_shedding", "activated", "now", risk=math.inf)

    events = (await client.get("/admin/events", params={"since": 0})).json()
    assert isinstance(events, list)
    assert [e["reason"] for e in events] == ["old", "now"]
    assert events[1]["detail"]["risk"] is None
    later = (await client.get("/admin/events", params={"since": 6})).json()
    assert [e["reason"] for e in later] == ["now"]
    bad = await client.get("/admin/events", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["field"] == "since"


async def test_metrics_and_increase_read_the_cells_one_registry(tmp_path: Path) -> None:
    """/metrics shows the cell's collector and the defenses' counters side by side (one
    registry, no clash); /admin/increase is a plain list of the window's increases while the
    cell's app runs (its lifespan keeps the embedding's window ticking), a 503 (the gateway's
    "unanswered") before."""
    recorder = PrometheusRecorder(CollectorRegistry(), cell="1")
    service = CellService(
        1, SystemSettings(cells=2), tmp_path / "cell-1.sqlite3", recorder=recorder
    )
    app = create_cell_app(service, TOKEN, recorder=recorder)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://cell", headers=headers, timeout=10
    ) as client:
        service.events.record("load_shedding", "activated", "test")
        exposition = (await client.get("/metrics")).text
        assert 'emergence_dependency_in_flight{cell="1",dependency="database"}' in exposition
        assert 'emergence_defense_events_total{cell="1"' in exposition
        assert (await client.get("/admin/increase")).status_code == 503

        async with app.router.lifespan_context(app):
            await asyncio.sleep(0)  # the window's first snapshot: the baseline
            for user in ("1", "2", "3"):
                assert (await service.profile(user)).status == 200
            answer = await client.get("/admin/increase", params={"seconds": 30})
            assert answer.status_code == 200, answer.text
            samples = answer.json()
            bad = await client.get("/admin/increase", params={"seconds": 0})
            assert bad.status_code == 400 and bad.json()["field"] == "seconds"
    assert isinstance(samples, list)
    grown = [
        s for s in samples if s["name"] == "emergence_dependency_attempts_total" and s["value"] > 0
    ]
    assert grown and all(s["labels"]["cell"] == "1" for s in grown), samples
