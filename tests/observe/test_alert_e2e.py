"""End to end: the metastable alert pages on-call, and every dashboard panel has data.

A real reference system (3 cells, the fast recovery settings of tests/app/test_recovery_live)
is driven into a metastable state: payments on a provider slower than its timeout, with the
breaker, throttle and retry budget off, so latency stays far above 500 ms at low load. A real
Prometheus scrapes it through /targets and evaluates the shipped rules (every `for` capped at
1 s); a real Alertmanager routes the alerts to a webhook this test serves on 127.0.0.1. The
test waits for the MetastableStateDetected notification of the faulted cell, then runs every
Grafana panel's query over the run against the same Prometheus.

With every defense (and so the detector) off, the users' symptoms still page: a database
that fails every call makes HighErrorRatio arrive, and no MetastableStateDetected.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaosemergence.observe.grafana import PANELS
from chaosemergence.observe.local_prometheus import LocalPrometheus
from chaosemergence.observe.prometheus_config import rules_with_for
from tests.app.test_recovery_live import OVERRIDES, UNDEFENDED, SlowPayments
from tests.conftest import RunningSystem, free_port, start_system, stop_system
from tests.observe.promtool import tool
from tests.observe.stack import Alertmanager, Webhook, port_open, wait_until

FAULTED = "0"


def _has_data(prometheus: str, expr: str, start: float, end: float) -> bool:
    answer = httpx.get(
        f"{prometheus}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": 1},
        timeout=10,
    ).json()
    assert answer["status"] == "success", answer
    return any(
        math.isfinite(float(value))
        for series in answer["data"]["result"]
        for _, value in series["values"]
    )


def _pages(alerts: list[dict[str, Any]], name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in alerts
        if a["labels"].get("alertname") == name
        and all(a["labels"].get(k) == v for k, v in labels.items())
        and a["status"] == "firing"
    ]


def _metastable_pages(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return _pages(alerts, "MetastableStateDetected", cell=FAULTED)


@contextmanager
def observed(
    tmp_path: Path, cells: int, overrides: dict[str, object] | None = None
) -> Iterator[tuple[RunningSystem, LocalPrometheus, Webhook]]:
    """System + Prometheus (shipped rules, holds capped at 1 s) + Alertmanager + webhook,
    every target scraped; everything stopped by pid afterwards, no port left open."""
    binary = tool("prometheus", "prometheus")
    tool("prometheus-alertmanager", "prometheus-alertmanager")
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules_with_for(1))
    ports = {name: free_port() for name in ("webhook", "alertmanager", "prometheus")}
    with Webhook(ports["webhook"]) as webhook:
        alertmanager = Alertmanager(tmp_path / "alertmanager", ports["alertmanager"], webhook.url)
        system = None
        prometheus = None
        try:
            system = start_system(tmp_path / "system", cells=cells, overrides=overrides)
            prometheus = LocalPrometheus(
                f"{system.url}/targets",
                ports["prometheus"],
                tmp_path / "prometheus",
                alertmanagers=[alertmanager.address],
                rule_files=[str(rules)],
                binary=binary,
            )
            prometheus.start()
            url = prometheus.url
            wait_until(
                lambda: httpx.get(
                    f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=5
                ).json()["data"]["result"][0]["value"][1],
                lambda up: up == str(cells + 1),
                60,
                f"the gateway and {cells} cells scraped",
            )
            yield system, prometheus, webhook
        finally:
            if prometheus is not None:
                prometheus.stop()
            if system is not None:
                stop_system(system)
            alertmanager.stop()
    assert not any(port_open(port) for port in ports.values())


@pytest.mark.timeout(180)
def test_metastable_alert_reaches_the_webhook_and_every_panel_has_data(tmp_path: Path) -> None:
    with observed(tmp_path, 3, OVERRIDES) as (system, prometheus, webhook):
        started = time.time()
        # Healthy so far: nothing paged.
        assert _metastable_pages(webhook.alerts()) == []
        system.admin("POST", "/admin/defenses", json={"enabled": False, "names": UNDEFENDED})
        fault = {
            "kind": "latency",
            "latency_ms": 700,
            "dependency": "payment_provider",
            "percentage": 100,
            "duration": 60,
            "cells": [int(FAULTED)],
        }
        assert system.admin("POST", "/admin/faults", json=fault).status_code == 201
        with SlowPayments(system):
            pages = wait_until(
                webhook.alerts,
                lambda found: bool(_metastable_pages(found)),
                60,
                "the MetastableStateDetected page at the webhook",
            )
            page = _metastable_pages(pages)[0]
            assert page["labels"]["severity"] == "page"
            assert "metastable" in page["annotations"]["summary"]
            # Prometheus saw the same: the alert is firing there too.
            firing = httpx.get(f"{prometheus.url}/api/v1/alerts", timeout=5).json()
            assert any(
                a["labels"]["alertname"] == "MetastableStateDetected" and a["state"] == "firing"
                for a in firing["data"]["alerts"]
            )
            system.admin("DELETE", "/admin/faults")
        # One step past now: the range query's last step then falls after the evaluation that
        # wrote the firing ALERTS sample (seen above). Ending at now, the last step could fall
        # just before it, and the "Alerts firing" panel read as empty.
        end = time.time() + 1.0
        empty = [
            f"{spec.title}: {query.expr}"
            for spec in PANELS
            for query in spec.queries
            if not _has_data(prometheus.url, query.expr, started, end)
        ]
        assert empty == [], f"panels without data: {empty}"


class NewUsers:
    """Profile reads of never-seen users (every one a cache miss) from a background thread."""

    def __init__(self, url: str) -> None:
        self.statuses: list[int] = []
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                answer = client.get(f"{self._url}/users/{uuid.uuid4().hex}/profile")
                self.statuses.append(answer.status_code)
                time.sleep(0.02)

    def __enter__(self) -> NewUsers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


@pytest.mark.timeout(180)
def test_with_every_defense_off_the_users_symptoms_still_page(tmp_path: Path) -> None:
    with observed(tmp_path, 2) as (system, _, webhook):
        off = system.admin("POST", "/admin/defenses", json={"enabled": False, "names": None})
        assert off.status_code == 200, off.text
        fault = {"kind": "error", "dependency": "database", "percentage": 100, "duration": 60}
        assert system.admin("POST", "/admin/faults", json=fault).status_code == 201
        with NewUsers(system.url) as users:
            pages = wait_until(
                webhook.alerts,
                lambda found: bool(_pages(found, "HighErrorRatio")),
                60,
                "the HighErrorRatio page at the webhook",
            )
        assert sum(status >= 500 for status in users.statuses) > 0.05 * len(users.statuses)
        assert _pages(pages, "HighErrorRatio")[0]["labels"]["severity"] == "page"
        # The detectors are off: only the symptom could page.
        assert _pages(pages, "MetastableStateDetected") == []
