"""The library's Prometheus recorder exports the emergence_* series the probes read (issue 11).

A real registry, scraped in the exposition format and parsed back into the samples the
probes compute on (chaosemergence.measure), so a renamed series or label fails here.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chaosemergence.defenses import (
    AdaptiveThrottle,
    BreakerConfig,
    CircuitBreaker,
    EventLog,
    Guard,
    RetryPolicy,
)
from chaosemergence.defenses.metrics import (
    BACKEND_COMPUTATIONS,
    CACHE_REQUESTS,
    DEPENDENCY_ATTEMPTS,
    REQUEST_DURATION,
    REQUESTS,
    SHARED_SERIES,
    PrometheusRecorder,
)
from chaosemergence.measure import (
    bucket_counts,
    histogram_quantile,
    percent_failed,
    samples_total,
)

from .conftest import FakeClock

ROOT = Path(__file__).resolve().parents[2]


def scrape(registry: CollectorRegistry) -> list[dict[str, Any]]:
    """The registry's samples as the probes see them: name, labels, value."""
    text = generate_latest(registry).decode()
    return [
        {"name": s.name, "labels": dict(s.labels), "value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


class Boom(Exception):
    pass


async def test_a_service_exports_what_the_probes_read(clock: FakeClock) -> None:
    """Requests, latency, a guarded dependency, a cache and the defense events, scraped."""
    registry = CollectorRegistry()
    recorder = PrometheusRecorder(registry, cell="3")
    events = EventLog(clock=clock, recorder=recorder)
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    breaker = CircuitBreaker("db", BreakerConfig(), clock=clock, recorder=recorder)
    retry = RetryPolicy(max_attempts=3, retry_on=(Boom,), sleep=sleep, recorder=recorder)
    throttle = AdaptiveThrottle(rejected_on=(Boom,), clock=clock, rng=random.Random(1))
    guard = recorder.track(
        Guard(breaker=breaker, throttle=throttle, retry=retry), dependency="database"
    )
    failures = [Boom(), Boom()]

    async def query() -> str:
        if failures:
            raise failures.pop()
        return "row"

    assert await guard.call(query) == "row"
    for _ in range(9):
        recorder.request("profile", "success", 0.02)
    recorder.request("profile", "failure", 2.0)
    recorder.cache("miss")
    recorder.cache("hit", 3)
    recorder.computation()
    events.record("circuit_breaker", "activated", "test")

    samples = scrape(registry)
    # The probes' own arithmetic on them.
    assert percent_failed(samples) == 10.0
    assert histogram_quantile(0.99, bucket_counts(samples, REQUEST_DURATION.name)) > 1.0
    assert samples_total(samples, REQUESTS.sample_name, cell="3", route="profile") == 10
    assert samples_total(samples, DEPENDENCY_ATTEMPTS.sample_name, dependency="database") == 3
    assert samples_total(samples, "emergence_dependency_retries_total") == 2
    assert samples_total(samples, "emergence_breaker_state", dependency="database") == 0
    assert samples_total(samples, CACHE_REQUESTS.sample_name, result="miss") == 1
    assert samples_total(samples, CACHE_REQUESTS.sample_name, result="hit") == 3
    assert samples_total(samples, BACKEND_COMPUTATIONS.sample_name, cell="3") == 1
    # The defenses' own counters, through the MetricsRecorder interface.
    assert (
        samples_total(
            samples, "emergence_defense_events_total", defense="circuit_breaker", cell="3"
        )
        == 1
    )
    assert samples_total(samples, "emergence_defense_retries_total", cell="3") == 2


def test_fallbacks_and_throttling_are_exported(clock: FakeClock) -> None:
    """The guard's fallbacks and throttled calls are read at scrape time."""
    registry = CollectorRegistry()
    recorder = PrometheusRecorder(registry)
    guard = recorder.track(Guard(name="cache"))
    guard.fallbacks, guard.throttled = 4, 2
    samples = scrape(registry)
    assert samples_total(samples, "emergence_fallbacks_total", dependency="cache", cell="0") == 4
    assert samples_total(samples, "emergence_throttled_calls_total", dependency="cache") == 2


def test_request_outcome_is_checked() -> None:
    with pytest.raises(ValueError, match="outcome"):
        PrometheusRecorder(CollectorRegistry()).request("profile", "ok", 0.1)


def test_the_probes_read_these_names() -> None:
    """The user-facing series' names are the ones the probes' source reads."""
    probes = (ROOT / "probes" / "__init__.py").read_text()
    for series in (REQUESTS, REQUEST_DURATION, DEPENDENCY_ATTEMPTS, CACHE_REQUESTS):
        assert f'"{series.sample_name}"' in probes or f'"{series.name}"' in probes, series.name
    assert BACKEND_COMPUTATIONS.sample_name in probes


def test_the_reference_system_uses_the_library() -> None:
    """The cells record through the library's recorder; the gateway's request series are its."""
    from chaosemergence.app import metrics as app_metrics

    assert app_metrics.PrometheusRecorder is PrometheusRecorder
    registry = CollectorRegistry()
    gateway = app_metrics.GatewayMetrics(registry)
    gateway.requests.labels("profile", "1", "success").inc()
    gateway.latency.labels("profile").observe(0.1)
    names = {s["name"] for s in scrape(registry)}
    assert {REQUESTS.sample_name, f"{REQUEST_DURATION.name}_bucket"} <= names
    source = (ROOT / "chaosemergence" / "app" / "metrics.py").read_text()
    for series in SHARED_SERIES:  # defined once, in the library
        assert f'"{series.name}"' not in source, series.name


def test_metrics_namespace_names_the_missing_extra() -> None:
    """Without prometheus_client the namespace imports; the recorder names the extra."""
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "import chaosemergence.defenses.metrics as m\n"
        "try:\n"
        "    m.PrometheusRecorder\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "chaostoolkit-emergence[prometheus]" in result.stdout, result.stdout
