"""The ``emergence_*`` series every service embedding the defenses exports (names only).

Standard library only: the names, help texts, labels and buckets the Prometheus recorder
(``chaosemergence.defenses.metrics.PrometheusRecorder``) and the reference system export,
and the Chaos Toolkit probes read. Counters are named without ``_total`` (Prometheus adds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BACKEND_COMPUTATIONS",
    "BREAKER_RISK",
    "BREAKER_STATE",
    "BREAKER_STATE_VALUES",
    "CACHE_REQUESTS",
    "DEFENSE_PREFIX",
    "DEPENDENCY_ATTEMPTS",
    "DEPENDENCY_RETRIES",
    "FALLBACKS",
    "LATENCY_BUCKETS",
    "REQUESTS",
    "REQUEST_DURATION",
    "SHARED_SERIES",
    "THROTTLED_CALLS",
    "Series",
]


@dataclass(frozen=True, slots=True)
class Series:
    """One exported series: its name (no ``_total``), kind, help text and label names."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]

    @property
    def sample_name(self) -> str:
        """The name its samples carry in the exposition (``_total`` for a counter)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


# Seconds; dense around the 1 s tolerance of the flagship experiment.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BREAKER_STATE_VALUES = {"closed": 0, "open": 1, "half_open": 2, "emergency": 3}
#: The defenses' own counters (``MetricsRecorder.increment(name)``) are
#: ``emergence_defense_<name>_total``: ``emergence_defense_events_total`` counts every
#: activation and deactivation an ``EventLog`` records.
DEFENSE_PREFIX = "emergence_defense_"

REQUESTS = Series(
    "emergence_requests",
    "counter",
    "User requests answered, by route, cell (failure domain) and outcome (success, failure, shed).",
    ("route", "cell", "outcome"),
)
REQUEST_DURATION = Series(
    "emergence_request_duration_seconds",
    "histogram",
    "User-visible request latency.",
    ("route",),
)
DEPENDENCY_ATTEMPTS = Series(
    "emergence_dependency_attempts",
    "counter",
    "Attempts made to a dependency, retries included.",
    ("cell", "dependency"),
)
DEPENDENCY_RETRIES = Series(
    "emergence_dependency_retries",
    "counter",
    "Retries made to a dependency.",
    ("cell", "dependency"),
)
FALLBACKS = Series(
    "emergence_fallbacks", "counter", "Calls answered by a fallback.", ("cell", "dependency")
)
THROTTLED_CALLS = Series(
    "emergence_throttled_calls",
    "counter",
    "Dependency calls the adaptive throttle rejected locally.",
    ("cell", "dependency"),
)
BREAKER_STATE = Series(
    "emergence_breaker_state",
    "gauge",
    "0 closed, 1 open, 2 half-open, 3 emergency.",
    ("cell", "dependency"),
)
BREAKER_RISK = Series(
    "emergence_breaker_emergence_risk",
    "gauge",
    "Each breaker's emergence risk from its last fresh signals (0..1; above 0.5 it stays "
    "open 30 s, above 0.8 60 s).",
    ("cell", "dependency"),
)
CACHE_REQUESTS = Series(
    "emergence_cache_requests", "counter", "Cache lookups by result.", ("cell", "result")
)
BACKEND_COMPUTATIONS = Series(
    "emergence_backend_computations",
    "counter",
    "Computations of cached values (cache fills).",
    ("cell",),
)

#: Every series above, as the probes read them.
SHARED_SERIES: tuple[Series, ...] = (
    REQUESTS,
    REQUEST_DURATION,
    DEPENDENCY_ATTEMPTS,
    DEPENDENCY_RETRIES,
    FALLBACKS,
    THROTTLED_CALLS,
    BREAKER_STATE,
    BREAKER_RISK,
    CACHE_REQUESTS,
    BACKEND_COMPUTATIONS,
)
