"""A cell's generic admin routes are the embedding's (issue 11): faults, defense switches,
jitter removal and cache invalidation of a reference cell are served by ``EmergenceAdmin``
(``cell_routes``) with the cell's dependencies, cache, timers and defenses registered, and
answer the gateway's fan-out with the shapes it reads.

A real CellService and its real app, called in process over ASGI (no sockets: the live
system's answers through the gateway are tests/app/test_admin_api.py's and
tests/extension/test_activities.py's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from chaosemergence.app.cell_app import create_cell_app
from chaosemergence.app.cell_service import CellService
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.switches import DEFENSES
from chaosemergence.embed import EmergenceAdmin

TOKEN = "cell-admin-token-0123456789"


@pytest.fixture
async def cell(tmp_path: Path) -> AsyncIterator[tuple[CellService, httpx.AsyncClient, list[Route]]]:
    service = CellService(0, SystemSettings(cells=2), tmp_path / "cell-0.sqlite3")
    app = create_cell_app(service, TOKEN)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://cell", headers=headers, timeout=10
    ) as client:
        routes = [r for r in app.routes if isinstance(r, Route)]
        yield service, client, routes
    await service.stop()


def _served_by_embedding(routes: list[Route], path: str, method: str) -> bool:
    endpoint = next(r for r in routes if r.path == path and method in (r.methods or ())).endpoint
    return isinstance(getattr(endpoint, "__self__", None), EmergenceAdmin)


async def test_the_generic_routes_are_the_embeddings(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    """Faults, defenses, jitter and cache invalidation: EmergenceAdmin's endpoints; the
    reference system's own (memory pressure, state) stay the cell's."""
    _, _, routes = cell
    for path, method in [
        ("/admin/faults", "POST"),
        ("/admin/faults", "DELETE"),
        ("/admin/defenses", "POST"),
        ("/admin/jitter", "POST"),
        ("/admin/cache/invalidate", "POST"),
    ]:
        assert _served_by_embedding(routes, path, method), (path, method)
    assert not _served_by_embedding(routes, "/admin/memory-pressure", "POST")
    assert not _served_by_embedding(routes, "/admin/state", "GET")


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
    assert not any(b.enabled for b in service.all_breakers())
    assert body["defenses"]["circuit_breaker"] is False and body["defenses"]["load_shedding"]

    refused = await client.post("/admin/defenses", json={"enabled": False, "names": ["nope"]})
    assert refused.status_code == 400 and refused.json()["field"] == "names[0]"

    removed = await client.post("/admin/jitter", json={"enabled": False})
    assert removed.json()["jitter_removed"] is True and service.jitter_removed
    back = await client.post("/admin/jitter", json={"enabled": True})
    assert back.json()["jitter_removed"] is False and not service.jitter_removed

    on = await client.post("/admin/defenses", json={"enabled": True, "names": None})
    assert sorted(on.json()["changed"]) == sorted(DEFENSES)
    assert all(service.enabled.values()) and all(b.enabled for b in service.all_breakers())


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
    assert not service.cache.is_fresh("profile:1")


async def test_the_routes_need_the_cells_token(
    cell: tuple[CellService, httpx.AsyncClient, list[Route]],
) -> None:
    _, client, _ = cell
    answer = await client.post(
        "/admin/jitter", json={"enabled": False}, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401
