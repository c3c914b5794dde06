"""The defenses' metrics on a Prometheus registry: the same ``emergence_*`` series anywhere.

Needs ``prometheus_client`` (the ``[prometheus]`` extra); imported only through
``chaosemergence.defenses.metrics``, which names the extra when it is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ._guard import Guard
from ._series import (
    BACKEND_COMPUTATIONS,
    BREAKER_RISK,
    BREAKER_STATE,
    BREAKER_STATE_VALUES,
    CACHE_REQUESTS,
    DEFENSE_PREFIX,
    DEPENDENCY_ATTEMPTS,
    DEPENDENCY_RETRIES,
    FALLBACKS,
    LATENCY_BUCKETS,
    REQUEST_DURATION,
    REQUESTS,
    THROTTLED_CALLS,
    Series,
)

__all__ = ["PrometheusRecorder", "new_family", "request_series"]

Family = CounterMetricFamily | GaugeMetricFamily


def new_family(series: Series) -> Family:
    """An empty family for a counter or gauge series, to fill in a collector at scrape time."""
    if series.kind == "counter":
        return CounterMetricFamily(series.name, series.help, labels=list(series.labels))
    if series.kind == "gauge":
        return GaugeMetricFamily(series.name, series.help, labels=list(series.labels))
    msg = f"{series.name} is a {series.kind}: create it with its own helper"
    raise ValueError(msg)


def request_series(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The user-visible request counter and latency histogram, registered on ``registry``."""
    requests = Counter(REQUESTS.name, REQUESTS.help, list(REQUESTS.labels), registry=registry)
    latency = Histogram(
        REQUEST_DURATION.name,
        REQUEST_DURATION.help,
        list(REQUEST_DURATION.labels),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    return requests, latency


class PrometheusRecorder:
    """The defenses' ``MetricsRecorder``, and the shared series, on a Prometheus registry.

    - As a ``MetricsRecorder`` (``recorder=`` of any defense or ``EventLog``): a counter
      ``emergence_defense_<name>_total`` is created on first use, with the labels of that
      first call plus ``cell`` and the constant labels; later calls use the same labels.
    - ``track(guard, dependency=...)``: the guard's attempts, retries, fallbacks, throttled
      calls and breaker state, read at scrape time.
    - ``request(route, outcome, seconds)``, ``cache(result)``, ``computation()``: what
      users saw, cache lookups, cache fills.

    ``cell`` is the failure domain this process serves (the probes' failure radius counts
    cells); a service with none keeps the default ``"0"``.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, cell: str = "0", **constant_labels: str
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.cell = cell
        self._constant = {"cell": cell, **constant_labels}
        # Guarded by _lock: series created on first use, from any thread.
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._requests: tuple[Counter, Histogram] | None = None
        self._guards: dict[str, Guard] = {}
        self._collector: _GuardCollector | None = None

    # -------------------------------------------------------------- MetricsRecorder
    def increment(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        labels = {**self._constant, **labels}
        counter = self._counters.get(name)
        if counter is None:
            with self._lock:
                counter = self._counters.get(name)
                if counter is None:
                    counter = Counter(
                        f"{DEFENSE_PREFIX}{name}",
                        f"{name.replace('_', ' ').capitalize()} (reported by the defenses).",
                        sorted(labels),
                        registry=self.registry,
                    )
                    self._counters[name] = counter
        counter.labels(**labels).inc(amount)

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        # No defense observes yet; counted so a new one is visible rather than lost.
        self.increment(f"{name}_observations", **labels)

    # ------------------------------------------------------------------ shared series
    def track(self, guard: Guard, *, dependency: str | None = None) -> Guard:
        """Export ``guard``'s counters as the dependency ``dependency`` (default its name)."""
        with self._lock:
            self._guards[dependency or guard.name] = guard
            if self._collector is None:
                self._collector = _GuardCollector(self)
                self.registry.register(self._collector)
        return guard

    def request(self, route: str, outcome: str, seconds: float, *, cell: str | None = None) -> None:
        """One user request: ``outcome`` is success, failure or shed (a refusal on purpose)."""
        if outcome not in ("success", "failure", "shed"):
            msg = f"outcome must be success, failure or shed, got {outcome!r}"
            raise ValueError(msg)
        requests, latency = self._request_series()
        requests.labels(route, cell if cell is not None else self.cell, outcome).inc()
        latency.labels(route).observe(seconds)

    def cache(self, result: Literal["hit", "miss", "stale"], amount: float = 1.0) -> None:
        """Cache lookups by result (the coalescing probes compare misses with computations)."""
        self._counter(CACHE_REQUESTS).labels(self.cell, result).inc(amount)

    def computation(self, amount: float = 1.0) -> None:
        """One computation of a cached value (a cache fill)."""
        self._counter(BACKEND_COMPUTATIONS).labels(self.cell).inc(amount)

    def _request_series(self) -> tuple[Counter, Histogram]:
        with self._lock:
            if self._requests is None:
                self._requests = request_series(self.registry)
            return self._requests

    def _counter(self, series: Series) -> Counter:
        with self._lock:
            counter = self._counters.get(series.name)
            if counter is None:
                counter = Counter(
                    series.name, series.help, list(series.labels), registry=self.registry
                )
                self._counters[series.name] = counter
            return counter

    def guards(self) -> dict[str, Guard]:
        with self._lock:
            return dict(self._guards)


class _GuardCollector(Collector):
    """Reads the tracked guards' counters at scrape time."""

    def __init__(self, recorder: PrometheusRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Family]:
        cell = self._recorder.cell
        attempts, retries = new_family(DEPENDENCY_ATTEMPTS), new_family(DEPENDENCY_RETRIES)
        fallbacks, throttled = new_family(FALLBACKS), new_family(THROTTLED_CALLS)
        state, risk = new_family(BREAKER_STATE), new_family(BREAKER_RISK)
        for name, guard in self._recorder.guards().items():
            retry = guard.retry
            attempts.add_metric([cell, name], retry.attempts if retry else guard.calls)
            retries.add_metric([cell, name], retry.retries if retry else 0)
            fallbacks.add_metric([cell, name], guard.fallbacks)
            throttled.add_metric([cell, name], guard.throttled)
            breaker = guard.breaker
            if breaker is not None:
                value = BREAKER_STATE_VALUES.get(breaker.state.value, -1)
                state.add_metric([cell, name], value)
                risk.add_metric([cell, name], breaker.emergence_risk)
        yield from (attempts, retries, fallbacks, throttled, state, risk)
