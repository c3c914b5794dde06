"""The windowed probes through a real Prometheus: the same numbers as the services' own window.

Prometheus starts first and finds the system through the gateway's `/targets`
(`http_sd_configs`), as in the weekly run (.ci/weekly.sh); then the same probes are asked both
ways, the embedded default and `prometheus_url`, over the same traffic and faults.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

import probes
from chaosemergence.measure import samples_total
from chaosemergence.prometheus import SERIES_SUFFIXES
from chaosemergence.traffic import TrafficSpec, start_traffic, stop_traffic
from tests.app.helpers import wait_for
from tests.conftest import RunningSystem, free_port, start_system, stop_system
from tests.e2e.prometheus import PrometheusServer, start_prometheus

pytestmark = pytest.mark.e2e
CELLS = 3
WINDOW = 20.0


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningSystem, PrometheusServer, Path]]:
    """Prometheus (started first, discovering through /targets), then a system under traffic."""
    workdir = tmp_path_factory.mktemp("prometheus-path")
    port = free_port()
    prometheus = start_prometheus(
        workdir, free_port(), http_sd=f"http://127.0.0.1:{port}/targets", expect_up=0
    )
    system = None
    traffic = workdir / "traffic"
    try:
        assert prometheus.up() == {}, "nothing to scrape before the system starts"
        system = start_system(workdir / "system", cells=CELLS, port=port)
        wait_for(
            prometheus.up,
            lambda up: len(up) == CELLS + 1 and set(up.values()) == {"1"},
            30,
            "Prometheus discovers the gateway and every cell through /targets",
        )
        yield system, prometheus, traffic
    finally:
        stop_traffic(traffic)
        if system is not None:
            stop_system(system)
        prometheus.stop()


def test_targets_lists_the_gateway_and_every_cell_without_a_token(
    live: tuple[RunningSystem, PrometheusServer, Path],
) -> None:
    """/targets is http_sd JSON: the gateway and each cell, each serving /metrics."""
    system, _, _ = live
    answer = httpx.get(f"{system.url}/targets", timeout=5)  # no Authorization header
    assert answer.status_code == 200
    (group,) = answer.json()
    cells = [
        c["url"].removeprefix("http://")
        for c in system.admin("GET", "/admin/state").json()["cells"]
    ]
    assert group == {
        "targets": [f"127.0.0.1:{system.port}", *cells],
        "labels": {"job": "chaosemergence"},
    }
    for target in group["targets"]:
        metrics = httpx.get(f"http://{target}/metrics", timeout=5, follow_redirects=True)
        assert metrics.status_code == 200 and "emergence_" in metrics.text, target


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


def test_windowed_probes_agree_through_both_paths(
    live: tuple[RunningSystem, PrometheusServer, Path],
) -> None:
    """Under the same traffic and errors, each windowed probe answers within a few percent
    whether it reads the services' window or Prometheus' increase()."""
    system, prometheus, traffic = live
    embedded: dict[str, Any] = dict(system.configuration)
    through = {**embedded, "prometheus_url": prometheus.url}
    # Failures and retries to measure: defenses off, most dependency calls error.
    assert system.admin("POST", "/admin/defenses", json={"enabled": False}).status_code == 200
    fault = {"kind": "error", "percentage": 80, "duration": 120, "dependency": "all"}
    assert system.admin("POST", "/admin/faults", json=fault).status_code == 201
    start_traffic(TrafficSpec(target_url=system.url, users=30, spawn_rate=30, duration=90), traffic)

    def requests(configuration: dict[str, Any]) -> float:
        try:
            return samples_total(
                probes._increase(WINDOW, configuration, None), "emergence_requests_total"
            )
        except ActivityFailed:
            return 0.0

    # A full window of traffic in both: Prometheus scraped it for at least WINDOW seconds.
    wait_for(
        lambda: prometheus.query(f"count_over_time(emergence_requests_total[{WINDOW:.0f}s])"),
        lambda result: bool(result) and min(float(r["value"][1]) for r in result) >= WINDOW - 1,  # type: ignore[index]
        60,
        "Prometheus holds a full window of samples",
    )
    wait_for(lambda: requests(embedded), lambda n: n >= 200, 60, "200 requests in the window")

    samples = {"embedded": probes._increase(WINDOW, embedded, None)}
    asked = prometheus.queries_answered()
    samples["prometheus"] = probes._increase(WINDOW, through, None)
    # One increase() per series name: the probe really asked Prometheus.
    assert prometheus.queries_answered() - asked >= len({s["name"] for s in samples["prometheus"]})
    names = {path: {s["name"] for s in found} for path, found in samples.items()}
    assert names["embedded"] == names["prometheus"]
    assert all(name.endswith(SERIES_SUFFIXES) for name in names["prometheus"])
    for name in ("emergence_requests_total", "emergence_dependency_attempts_total"):
        counts = [samples_total(found, name) for found in samples.values()]
        assert min(counts) > 0 and _relative(*counts) < 0.15, (name, counts)

    figures = {
        path: probes.emergence_figures(window=WINDOW, configuration=configuration)
        for path, configuration in (("embedded", embedded), ("prometheus", through))
    }
    print("figures, embedded and through Prometheus:", figures)
    radius = [f["failure_radius_pct"] for f in figures.values()]
    assert min(radius) > 5 and abs(radius[0] - radius[1]) < 3, figures
    amplification = [f["retry_amplification"] for f in figures.values()]
    assert _relative(*amplification) < 0.15, figures
    goodput = [f["goodput_rps"] for f in figures.values()]
    assert min(goodput) > 0 and _relative(*goodput) < 0.15, figures
    hit_rate = [f["cache_hit_rate"] for f in figures.values()]
    assert all(h is not None for h in hit_rate) and abs(hit_rate[0] - hit_rate[1]) < 0.05, figures
    for probe in (probes.measure_failure_radius, probes.goodput, probes.retry_amplification):
        both = [probe(window=WINDOW, configuration=c) for c in (embedded, through)]
        assert all(math.isfinite(v) for v in both), (probe.__name__, both)


def test_prometheus_path_fails_when_it_cannot_measure(
    live: tuple[RunningSystem, PrometheusServer, Path],
) -> None:
    """An unreachable Prometheus and an empty window raise, never a passing zero."""
    system, prometheus, _ = live
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    nowhere = {**system.configuration, "prometheus_url": f"http://127.0.0.1:{closed}"}
    with pytest.raises(ActivityFailed, match=f"127.0.0.1:{closed}"):
        probes.measure_failure_radius(window=WINDOW, configuration=nowhere)
    # The window holds far fewer requests than min_requests asks for.
    through = {**system.configuration, "prometheus_url": prometheus.url}
    with pytest.raises(ActivityFailed, match="min_requests"):
        probes.measure_failure_radius(window=WINDOW, min_requests=10**8, configuration=through)
