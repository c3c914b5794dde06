"""The windowed probes on a service that is not the reference system, through a real Prometheus.

The service (tests/service/user_service.py) exports its own metric names; the probes are
told them in `prometheus_metrics` and must give the numbers the requests sent imply. The
failures arrive in one burst between two scrapes, so their series is born inside the window:
`increase()` alone reads 0 there, a passing zero the probes must not return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

import probes
from tests.app.helpers import wait_for
from tests.conftest import free_port
from tests.e2e.prometheus import PrometheusServer, start_prometheus
from tests.service import start_user_service, stop_process

pytestmark = pytest.mark.e2e
WINDOW = 30
METRICS = {
    "requests": 'shop_http_requests_total{handler="/work"}',
    "status_label": "status",
    "failed_status": "5..",
    "success_status": "2..",
    "latency_histogram": "shop_http_request_duration_seconds",
    "attempts": "shop_backend_calls_total",
    "cache_misses": 'shop_cache_requests_total{result="miss"}',
    "computations": "shop_computations_total",
    "selector": 'job="chaosemergence"',
}


@dataclass
class Shop:
    url: str
    prometheus: PrometheusServer
    started: float  # epoch seconds before any request or defense event

    @property
    def configuration(self) -> dict[str, object]:
        return {"prometheus_base_url": self.prometheus.url, "prometheus_metrics": METRICS}


def _scraped(prometheus: PrometheusServer, query: str, value: float) -> None:
    def read() -> float:
        result = prometheus.query(query)
        return float(result[0]["value"][1]) if result else -1.0  # type: ignore[index]

    wait_for(read, lambda seen: seen == value, 30, f"Prometheus scrapes {query} == {value}")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The service under a known load: 20 fast OKs, a scrape, then 25 OKs and 15 slow 503s."""
    workdir: Path = tmp_path_factory.mktemp("user-service")
    port = free_port()
    service = start_user_service(port)
    prometheus = None
    try:
        prometheus = start_prometheus(workdir, free_port(), [f"127.0.0.1:{port}"])
        url = f"http://127.0.0.1:{port}"
        started = time.time()
        with httpx.Client(base_url=url, timeout=5) as client:
            for _ in range(20):
                client.get("/work", params={"ms": 10})
            _scraped(prometheus, "sum(shop_http_requests_total)", 20)
            # The burst: every 503 and every miss lands between two scrapes.
            for _ in range(25):
                client.get("/work", params={"ms": 10})
            for i in range(15):
                params: dict[str, int] = {"status": 503, "ms": 400, "attempts": 3, "miss": 1}
                if i % 3 == 0:
                    params["computed"] = 1
                assert client.get("/work", params=params).status_code == 503
            client.get("/defense", params={"name": "circuit_breaker"})
        _scraped(prometheus, "sum(shop_http_requests_total)", 60)
        _scraped(prometheus, "sum(emergence_defense_events_total)", 1)
        yield Shop(url, prometheus, started)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_process(service)


def test_failure_radius_counts_the_503s_born_inside_the_window(shop: Shop) -> None:
    """15 of 60 requests failed: 25 %, though increase() alone sees no 503 at all."""
    alone = probes.query_prometheus(
        'sum(increase(shop_http_requests_total{status="503"}[30s]))', shop.configuration
    )
    assert math.isnan(alone) or alone == 0.0, "increase() alone misses a series born in a burst"
    radius = probes.measure_failure_radius(window=WINDOW, configuration=shop.configuration)
    assert radius == pytest.approx(25.0, abs=1.0)


def test_p99_comes_from_the_users_histogram(shop: Shop) -> None:
    """Over the window's rate, 25 answers took 10 ms and 15 took 400 ms: p99 ~493 ms."""
    p99 = probes.latency_percentile(0.99, window=WINDOW, configuration=shop.configuration)
    assert 480 <= p99 <= 500
    p50 = probes.latency_percentile(0.5, window=WINDOW, configuration=shop.configuration)
    assert p50 <= 25


def test_retry_amplification_goodput_and_coalescing_from_the_users_counters(shop: Shop) -> None:
    """90 backend calls for 60 requests; 45 OKs in 30 s; 5 computations for 15 misses."""
    config = shop.configuration
    assert probes.retry_amplification(window=WINDOW, configuration=config) == pytest.approx(1.5)
    assert probes.goodput(window=WINDOW, configuration=config) == pytest.approx(1.5)
    assert probes.coalescing_ratio(window=WINDOW, configuration=config) == pytest.approx(
        1 / 3, abs=0.01
    )


def test_defense_activation_from_the_events_counter_in_prometheus(shop: Shop) -> None:
    """The breaker activated after `started`; jitter never did; nothing after the event."""
    config = shop.configuration
    assert probes.check_defense_activation(
        ["circuit_breaker"], since=shop.started, configuration=config
    )
    assert probes.check_defense_activation(None, since=shop.started, configuration=config)
    with pytest.raises(
        ActivityFailed, match=r"jitter did not activate.*activated: circuit_breaker"
    ):
        probes.check_defense_activation(
            ["circuit_breaker", "jitter"], since=shop.started, configuration=config
        )
    with pytest.raises(ActivityFailed, match="no defense activated since"):
        probes.check_defense_activation(None, since=time.time() - 0.01, configuration=config)


def test_probes_with_no_data_in_their_window_fail_rather_than_pass_a_zero(shop: Shop) -> None:
    """A selector that matches nothing, a misnamed counter, too few requests: each fails."""
    nowhere = {**shop.configuration, "prometheus_metrics": {**METRICS, "selector": 'job="nope"'}}
    with pytest.raises(ActivityFailed, match="no series of shop_http_requests_total"):
        probes.measure_failure_radius(window=WINDOW, configuration=nowhere)
    with pytest.raises(ActivityFailed, match="no series"):
        probes.goodput(window=WINDOW, configuration=nowhere)
    misnamed = {"attempts": "shop_retries_total"}
    with pytest.raises(
        ActivityFailed, match=r"no series shop_retries_total.*prometheus_metrics.attempts"
    ):
        probes.retry_amplification(
            window=WINDOW, metrics=misnamed, configuration=shop.configuration
        )
    with pytest.raises(ActivityFailed, match=r"60 request.*min_requests=1000"):
        probes.latency_percentile(
            0.99, window=WINDOW, min_requests=1000, configuration=shop.configuration
        )
    with pytest.raises(ActivityFailed, match=r"unknown key.*retries"):
        probes.goodput(window=WINDOW, metrics={"retries": "x"}, configuration=shop.configuration)
