"""The live dashboard, in a real headless Chromium and in the terminal, on a real system.

The browser test needs Debian's `chromium` (/usr/bin/chromium, or $CHAOSEMERGENCE_CHROMIUM)
and the `playwright` package (which drives it; its own browser download is never used).
Without them it skips, unless CHAOSEMERGENCE_REQUIRE_BROWSER or CI is set: there it fails.
Screenshots are written under $CHAOSEMERGENCE_ARTIFACTS/dashboard (else the test's tmp dir);
the test prints where.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaosemergence.app.dashboard import Dashboard
from tests.app.helpers import users_of, wait_for
from tests.conftest import ROOT, RunningSystem

VIEWS = (
    "breakers",
    "complexity",
    "coalescing",
    "synchronization",
    "cascade",
    "metastable",
    "effectiveness",
)


def _chromium() -> str:
    """Debian's chromium and an importable playwright, or skip (fail where required)."""
    path = os.environ.get("CHAOSEMERGENCE_CHROMIUM") or shutil.which("chromium") or ""
    problem = ""
    if not path or not Path(path).exists():
        problem = "no chromium binary (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[test]')"
    if problem:
        if os.environ.get("CHAOSEMERGENCE_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(f"browser test required here: {problem}")
        pytest.skip(problem)
    return path


def _artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    base = os.environ.get("CHAOSEMERGENCE_ARTIFACTS")
    directory = (Path(base) if base else tmp_path) / "dashboard"
    directory.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():  # shown even when pytest captures output
        print(f"\ndashboard screenshots in {directory}")
    return directory


@contextlib.contextmanager
def _traffic(url: str, users: list[str], pause: float = 0.03) -> Iterator[list[int]]:
    """Users reading profiles and recommendations (and paying now and then) until the block
    ends; yields the list of answered requests' status codes (appended as they come)."""
    stop = threading.Event()
    statuses: list[int] = []

    def run() -> None:
        with httpx.Client(timeout=5) as client:
            i = 0
            while not stop.is_set():
                user = users[i % len(users)]
                for path in ("profile", "recommendations"):
                    with contextlib.suppress(httpx.HTTPError):
                        statuses.append(client.get(f"{url}/users/{user}/{path}").status_code)
                if i % 5 == 0:
                    with contextlib.suppress(httpx.HTTPError):
                        answer = client.post(
                            f"{url}/users/{user}/payments",
                            json={"amount": 1, "idempotency_key": f"dash-{i}"},
                        )
                        statuses.append(answer.status_code)
                i += 1
                stop.wait(pause)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        yield statuses
    finally:
        stop.set()
        worker.join(timeout=10)


def test_dashboard_data_needs_the_admin_token(clean_system: RunningSystem) -> None:
    assert httpx.get(f"{clean_system.url}/admin/dashboard", timeout=10).status_code == 401
    page = httpx.get(f"{clean_system.url}/dashboard", timeout=10)
    assert page.status_code == 200
    assert 'data-view="effectiveness"' in page.text
    # Nothing external: no script, style or font from another origin.
    assert "http://" not in page.text and "https://" not in page.text


def test_page_renders_every_view_and_shows_a_fault(
    clean_system: RunningSystem, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    system = clean_system
    artifacts = _artifacts(tmp_path, capsys)
    users = [f"dash-user-{i}" for i in range(60)]
    outside: list[str] = []
    errors: list[str] = []
    with _traffic(system.url, users) as statuses, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on(
                "request",
                lambda r: (
                    None if r.url.startswith((system.url, "data:")) else outside.append(r.url)
                ),
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{system.url}/dashboard#token={system.token}")
            # Every view drawn from a frame, with traffic in it and a history to chart.
            page.wait_for_function(
                "() => document.querySelectorAll('section[data-view][data-rendered=true]')"
                ".length === 7",
                timeout=30_000,
            )
            page.wait_for_function(
                "() => !document.querySelector('#view-breakers').innerText.includes('no traffic')"
                " && document.getElementById('kpi-p99').textContent !== '-'"
                " && (document.querySelector('#view-synchronization polyline[data-series="
                "correlation]')?.getAttribute('points') || '').split(' ').length >= 3"
                " && document.querySelectorAll('[data-breaker$=\".recommendations\"]').length === 3"
                " && [...document.querySelectorAll('[data-breaker$=\".recommendations\"]')]"
                ".every(e => e.dataset.state === 'closed')",
                timeout=45_000,
            )
            # The token left the address bar (it stays in the tab's sessionStorage).
            assert "token=" not in page.url
            _assert_views(page, system.cells)
            page.screenshot(path=str(artifacts / "dashboard-before.png"), full_page=True)

            fault = {
                "kind": "error",
                "percentage": 100,
                "duration": 60,
                "dependency": "recommendations",
            }
            assert system.admin("POST", "/admin/faults", json=fault).status_code == 201
            # The faulted dependency's breakers leave CLOSED on the page.
            page.wait_for_function(
                "() => [...document.querySelectorAll('[data-breaker$=\".recommendations\"]')]"
                ".some(e => e.dataset.state !== 'closed')",
                timeout=45_000,
            )
            tripped = page.locator('[data-breaker$=".recommendations"]:not([data-state="closed"])')
            chip = tripped.first
            assert "CLOSED" not in chip.inner_text()
            assert any(
                f"state-{s}" in (chip.get_attribute("class") or "")
                for s in ("open", "half_open", "emergency")
            )
            # And the trip is in the timeline of incidents prevented.
            page.wait_for_selector('#incidents li[data-defense="breaker_trip"]', timeout=15_000)
            assert "recommendations" in page.inner_text("#incidents")
            page.screenshot(path=str(artifacts / "dashboard-fault.png"), full_page=True)
        finally:
            browser.close()
    assert statuses, "the traffic thread got no answer"
    assert not outside, f"the page fetched from outside the gateway: {outside}"
    assert not errors, f"script errors on the page: {errors}"
    assert (artifacts / "dashboard-fault.png").stat().st_size > 10_000


def _assert_views(page: Any, cells: int) -> None:
    """Each of the seven views shows data, not a placeholder."""
    for view in VIEWS:
        body = page.inner_text(f'section[data-view="{view}"] .body')
        assert "waiting for data" not in body, view
    breakers = page.locator("#view-breakers .card[data-cell]")
    assert breakers.count() == cells
    for i in range(cells):
        card = page.inner_text(f'#view-breakers .card[data-cell="{i}"]')
        for label in ("Success rate", "Latency p99", "Circuit trips", "Emergence risk", "%"):
            assert label in card, (i, label, card)
        assert page.locator(f'#view-breakers .card[data-cell="{i}"] [data-breaker]').count() >= 4
    complexity = page.inner_text("#view-complexity")
    assert "score" in complexity and "level" in complexity
    assert page.locator("#view-complexity table tr").count() == 5  # header + 4 priorities
    for priority in ("critical", "high", "medium", "low"):
        assert priority in complexity
    big = page.locator("#view-coalescing .big b").all_inner_texts()
    assert len(big) == 4 and big[0] != "-", big
    assert page.locator("#view-synchronization .chip").count() == cells
    assert "Correlation" in page.inner_text("#view-synchronization")
    assert page.locator("#view-cascade .tile").count() == cells
    assert f"{cells}/{cells}" in page.inner_text("#view-cascade")
    stages = page.locator("#view-metastable [data-stage]")
    assert stages.count() == cells
    assert "Traffic paused" in stages.first.inner_text() and "100%" in stages.first.inner_text()
    defenses = page.locator("#view-effectiveness ul.defenses li")
    assert defenses.count() == 6
    effectiveness = page.inner_text("#view-effectiveness")
    for label in (
        "Retry storm",
        "Thundering herd",
        "Death spiral",
        "Synchronization",
        "Cascade risk",
        "Metastable",
        "Recent incidents prevented".upper(),
    ):
        assert label in effectiveness, label


def _terminal_frame(system: RunningSystem) -> str:
    env = {
        **os.environ,
        "CHAOSEMERGENCE_ADMIN_TOKEN": system.token,
        "COLUMNS": "220",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "chaosemergence.cli", "dashboard", "--once", "--url", system.url],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_terminal_dashboard_shows_defenses_and_a_prevented_incident(
    clean_system: RunningSystem,
) -> None:
    system = clean_system
    before = _terminal_frame(system)
    assert "EMERGENCE DEFENSE SYSTEM STATUS" in before
    for row in (
        "Circuit breakers:",
        "Load shedding:",
        "Request coalescing:",
        "Jitter injection:",
        "Cellular isolation:",
        "Metastable monitor:",
    ):
        assert row in before, row
    assert f"{system.cells}/{system.cells} cells up" in before
    assert "Isolated cell" not in before

    # Provoke one: cell 1 dies while its users keep coming; cellular routing keeps them there.
    victim = 1
    users = users_of(system.cells, victim, 10, "term-")
    assert system.admin("POST", f"/admin/cells/{victim}/kill").status_code == 200
    with _traffic(system.url, users, pause=0.05) as statuses:
        wait_for(
            lambda: sum(1 for s in list(statuses) if s == 503),
            lambda n: n >= 5,
            30,
            "users of the dead cell answered 503",
        )
        # Frames are shared for a second: wait for one assembled after the containment.
        wait_for(
            lambda: system.admin("GET", "/admin/dashboard").json()["incidents"],
            lambda found: any(i["defense"] == "cellular_routing" for i in found),
            30,
            "the dashboard's frame holds the containment",
        )
        after = _terminal_frame(system)
    assert f"{system.cells - 1}/{system.cells} cells up" in after, after
    assert f"Isolated cell {victim}:" in after, after
    assert "impact on all users" in after


def test_frames_survive_a_dead_cell_and_count_what_coalescing_saved() -> None:
    """Frame assembly on made-up admin answers: a dead cell (no state) still renders, and a
    coalescing burst's saving is what its cell coalesced across it."""
    now = [1000.0]
    dashboard = Dashboard("t", clock=lambda: now[0])

    def state(coalesced: float) -> dict[str, Any]:
        body = {
            "coalescing": {"coalesced": coalesced, "computations": 3},
            "cache": {"misses": 10},
        }
        return {
            "started_at": 900.0,
            "gateway": {"cellular_routing": True},
            "cells": [
                {"index": 0, "alive": True, "state": body},
                {"index": 1, "alive": False, "state": None},
                {"index": 2, "alive": False, "state": {"error": "cell is down"}},
            ],
        }

    first = dashboard.assemble(state(10), {"events": []}, {"samples": []})
    assert first["cascade"]["cells_up"] == 1
    for cell in (1, 2):
        assert first["metastable"]["cells"][cell]["stage"] == "down"
        assert first["complexity"]["cells"][cell]["alive"] is False
        assert first["breakers"]["cells"][cell]["p99_ms"] is None
    now[0] = 1002.0
    event = {
        "cell": 0,
        "defense": "request_coalescing",
        "kind": "activated",
        "at": 1001.5,
        "reason": "concurrent misses shared one computation",
        "detail": {},
    }
    dashboard.assemble(state(25), {"events": [event]}, {"samples": []})
    now[0] = 1003.0
    frame = dashboard.assemble(state(40), {"events": [event]}, {"samples": []})
    (incident,) = frame["incidents"]
    assert incident["saved"] == 30  # 40 now - 10 at the frame before the burst
    assert "saved 30 computations" in incident["text"]
    assert incident["count"] == 1  # the same event seen twice is one
