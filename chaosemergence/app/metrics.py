"""Prometheus metrics of the reference system: names live here, values come from the services.

Cells expose their counters through a collector that reads the service objects at scrape
time (one source of truth, nothing to keep in sync); the gateway records user-visible
requests and latency directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from chaosemergence.app.cell_service import CellService

__all__ = ["LATENCY_BUCKETS", "CellCollector", "GatewayMetrics"]

# Seconds; dense around the 1 s tolerance of the flagship experiment.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BREAKER_STATE_VALUES = {"closed": 0, "open": 1, "half_open": 2, "emergency": 3}


class GatewayMetrics:
    """What users see: requests by route, cell and outcome; latency histogram in seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "emergence_requests",
            "User requests answered by the gateway.",
            ["route", "cell", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "emergence_request_duration_seconds",
            "User-visible request latency at the gateway.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.gateway_retries = Counter(
            "emergence_gateway_retries",
            "Retries the gateway made towards cells (naive mode only).",
            registry=registry,
        )


class CellCollector(Collector):
    """Reads one cell's counters and gauges at scrape time."""

    def __init__(self, cell: CellService) -> None:
        self._cell = cell

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cell = self._cell
        label = str(cell.index)
        attempts = CounterMetricFamily(
            "emergence_dependency_attempts",
            "Attempts made to a dependency, retries included.",
            labels=["cell", "dependency"],
        )
        retries = CounterMetricFamily(
            "emergence_dependency_retries",
            "Retries made to a dependency.",
            labels=["cell", "dependency"],
        )
        outcomes = CounterMetricFamily(
            "emergence_dependency_results",
            "Dependency attempts by result.",
            labels=["cell", "dependency", "result"],
        )
        fallbacks = CounterMetricFamily(
            "emergence_fallbacks", "Calls answered by a fallback.", labels=["cell", "dependency"]
        )
        in_flight = GaugeMetricFamily(
            "emergence_dependency_in_flight", "Calls being served.", labels=["cell", "dependency"]
        )
        waiting = GaugeMetricFamily(
            "emergence_dependency_queue_depth", "Calls queued.", labels=["cell", "dependency"]
        )
        breaker = GaugeMetricFamily(
            "emergence_breaker_state",
            "0 closed, 1 open, 2 half-open, 3 emergency.",
            labels=["cell", "dependency"],
        )
        for name, dep in cell.dependencies.items():
            attempts.add_metric([label, name], cell.attempts[name])
            retries.add_metric([label, name], cell.retries[name])
            stats = dep.stats
            for result, value in (
                ("success", stats.succeeded),
                ("timeout", stats.timeouts),
                ("error", stats.errors),
                ("overloaded", stats.overloaded),
                ("wasted", stats.wasted),
            ):
                outcomes.add_metric([label, name, result], value)
            fallbacks.add_metric([label, name], cell.fallbacks[name])
            in_flight.add_metric([label, name], dep.in_flight)
            waiting.add_metric([label, name], dep.waiting)
            state = cell.breakers[name].state.name.lower()
            breaker.add_metric([label, name], BREAKER_STATE_VALUES.get(state, -1))
        yield from (attempts, retries, outcomes, fallbacks, in_flight, waiting, breaker)

        cache = CounterMetricFamily(
            "emergence_cache_requests", "Cache lookups by result.", labels=["cell", "result"]
        )
        cache.add_metric([label, "hit"], cell.cache.hits)
        cache.add_metric([label, "miss"], cell.cache.misses)
        yield cache
        computations = CounterMetricFamily(
            "emergence_backend_computations", "Profile computations (cache fills).", labels=["cell"]
        )
        computations.add_metric([label], cell.computations)
        yield computations
        prewarms = CounterMetricFamily(
            "emergence_prewarm_computations",
            "Profile computations made by cache prewarming (not by a user's miss).",
            labels=["cell"],
        )
        prewarms.add_metric([label], cell.prewarm_computations)
        yield prewarms
        self_calls = CounterMetricFamily(
            "emergence_self_generated_calls",
            "Calls the cell makes on its own schedule (periodic jobs) or as retries.",
            labels=["cell", "kind"],
        )
        for kind, value in cell.self_calls.items():
            self_calls.add_metric([label, kind], value)
        yield self_calls
        enabled = GaugeMetricFamily(
            "emergence_defense_enabled",
            "1 when the defense is switched on.",
            labels=["cell", "defense"],
        )
        for name, on in cell.enabled.items():
            enabled.add_metric([label, name], 1.0 if on else 0.0)
        yield enabled
