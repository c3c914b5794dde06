"""The windowed probes' numbers from Prometheus, under the metric names a service really has.

A service that is not the reference system exports its own HTTP metrics (for example
`http_requests_total{status="503"}` and `http_request_duration_seconds_bucket`) or the
library's `emergence_*` series. `MetricNames` says which is which, from the configuration's
`prometheus_metrics` block overridden by a probe's `metrics` argument:

    prometheus_metrics:
      requests: http_requests_total          # counter of requests served (a series selector)
      status_label: status                   # the label holding the answer's status
      failed_status: "5.."                   # regex of the statuses counted as failed
      success_status: "[23].."               # regex of the statuses counted as goodput
      latency_histogram: http_request_duration_seconds   # histogram in seconds (no _bucket)
      attempts: http_client_requests_total   # outgoing calls, retries included
      computations: backend_computations_total
      cache_misses: 'cache_requests_total{result="miss"}'
      defense_events: emergence_defense_events_total
      selector: 'job="shop"'                 # label matchers added to every series

A counter's growth over a window is its last value in the window minus its value a window
ago, plus the whole value of a series born inside the window (`increase()` cannot see the
first increments of such a series, and the first 503s of a healthy service are exactly
that; it also extrapolates past the samples); `increase()` only when a counter reset in the
window. A window without the series at all is no data, and every probe fails on it rather
than return a passing zero.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, fields
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaosemergence.prometheus import PrometheusAccess, query_scalar

__all__ = [
    "METRICS_KEY",
    "MetricNames",
    "activations",
    "counter_growth",
    "latency_quantile",
    "metric_names",
    "window_text",
]

#: The configuration block naming a service's metrics.
METRICS_KEY = "prometheus_metrics"
# A metric name, optionally followed by label matchers: `name` or `name{a="b",c=~"d"}`.
_SERIES = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})?", re.DOTALL)
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# YAML key -> MetricNames field.
_KEYS = {
    "requests": "requests",
    "status_label": "status_label",
    "failed_status": "failed_status",
    "success_status": "success_status",
    "latency_histogram": "latency_histogram",
    "attempts": "attempts",
    "computations": "computations",
    "cache_misses": "cache_misses",
    "defense_events": "defense_events",
    "selector": "selector",
}


@dataclass(frozen=True)
class MetricNames:
    """Which series hold a service's requests, statuses, latency and mechanisms."""

    requests: str = "http_requests_total"
    status_label: str = "status"
    failed_status: str = "5.."
    success_status: str = "[23].."
    latency_histogram: str | None = None
    attempts: str | None = None
    computations: str | None = None
    cache_misses: str | None = None
    defense_events: str = "emergence_defense_events_total"
    selector: str = ""

    def __post_init__(self) -> None:
        for name in ("requests", "attempts", "computations", "cache_misses", "defense_events"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _SERIES.fullmatch(value)):
                raise ActivityFailed(
                    f"{METRICS_KEY}.{name} must be a metric name or series selector "
                    f'(name{{label="value"}}), got {value!r}'
                )
        if self.latency_histogram is not None and not (
            isinstance(self.latency_histogram, str)
            and _LABEL.fullmatch(self.latency_histogram.replace(":", "_"))
        ):
            raise ActivityFailed(
                f"{METRICS_KEY}.latency_histogram must be a histogram's name (without _bucket), "
                f"got {self.latency_histogram!r}"
            )
        if not (isinstance(self.status_label, str) and _LABEL.fullmatch(self.status_label)):
            raise ActivityFailed(
                f"{METRICS_KEY}.status_label must be a label name, got {self.status_label!r}"
            )
        for name in ("failed_status", "success_status", "selector"):
            value = getattr(self, name)
            if not isinstance(value, str) or "{" in value or "}" in value:
                raise ActivityFailed(
                    f"{METRICS_KEY}.{name} must be a string without braces, got {value!r}"
                )

    def series(self, series: str, *matchers: str) -> str:
        """`series` with `matchers` and the configured selector added to its label matchers."""
        name, _, inner = series.partition("{")
        parts = [
            p for p in (inner.rstrip().removesuffix("}").strip(), *matchers, self.selector) if p
        ]
        return f"{name}{{{','.join(parts)}}}"

    def failed(self) -> str:
        return self.series(self.requests, f'{self.status_label}=~"{self.failed_status}"')

    def succeeded(self) -> str:
        return self.series(self.requests, f'{self.status_label}=~"{self.success_status}"')

    def need(self, key: str, probe: str) -> str:
        """The configured series for `key`, or ActivityFailed naming the key to set."""
        value = getattr(self, key)
        if not value:
            raise ActivityFailed(
                f"{probe}: name the series in {METRICS_KEY}.{key} (configuration) or in the "
                f"probe's metrics argument"
            )
        return str(value)


def metric_names(
    configuration: dict[str, Any] | None, metrics: dict[str, Any] | None
) -> MetricNames | None:
    """The service's metric names (configuration block, then the probe's argument), or None
    when neither names any: the probes then read the reference system's `emergence_*`."""
    block = (configuration or {}).get(METRICS_KEY)
    merged: dict[str, Any] = {}
    for where, given in ((METRICS_KEY, block), ("metrics", metrics)):
        if given is None:
            continue
        if not isinstance(given, dict):
            raise ActivityFailed(f"{where} must be a mapping of metric names, got {given!r}")
        unknown = sorted(set(given) - set(_KEYS))
        if unknown:
            raise ActivityFailed(
                f"{where}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(_KEYS)}"
            )
        merged.update(given)
    if not merged:
        return None
    known = {f.name for f in fields(MetricNames)}
    return MetricNames(**{_KEYS[k]: v for k, v in merged.items() if _KEYS[k] in known})


def window_text(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def counter_growth(
    access: PrometheusAccess, series: str, seconds: float, at: float | None = None
) -> float | None:
    """How much the counters selected by `series` grew over the last `seconds`, summed;
    None when no such series exists in the window (no data, not zero).

    Without a counter reset in the window: each series' last value in the window minus its
    value a window ago; the whole value of the series born inside the window while their
    target was already scraped (their first increments, which `increase()` cannot see); the
    growth seen of the series first scraped with their target. With a reset: `increase()`,
    which handles resets but extrapolates.
    """
    when = time.time() if at is None else at
    w = window_text(seconds)
    resets = query_scalar(access, f"sum(resets({series}[{w}]))", at=when)
    if math.isnan(resets):
        return None
    if resets > 0:
        grown = query_scalar(access, f"sum(increase({series}[{w}]))", at=when)
        return None if math.isnan(grown) else max(0.0, grown)
    last, before = f"last_over_time({series}[{w}])", f"{series} offset {w}"
    # Born while its target was already scraped: seen in fewer scrapes than the target.
    scraped = (
        f"(count_over_time({series}[{w}]) < on (instance, job) group_left count_over_time(up[{w}]))"
    )
    parts = (
        # Series that existed a window ago: their growth since then.
        f"sum({last} - {before})",
        # Series born inside the window: all of their value.
        f"sum(({last} unless {before}) and {scraped})",
        # Series first seen with their target (Prometheus' history is shorter than the
        # window, or the target is new): what they grew while scraped.
        f"sum((({last} - min_over_time({series}[{w}])) unless {before}) unless {scraped})",
    )
    values = [query_scalar(access, query, at=when) for query in parts]
    return sum(v for v in values if not math.isnan(v))


def latency_quantile(
    access: PrometheusAccess, names: MetricNames, quantile: float, seconds: float, probe: str
) -> float:
    """The `quantile` of the latency histogram over the window, in seconds (NaN: no data)."""
    histogram = names.need("latency_histogram", probe)
    bucket = names.series(f"{histogram}_bucket")
    query = f"histogram_quantile({quantile}, sum by (le) (rate({bucket}[{window_text(seconds)}])))"
    return query_scalar(access, query)


def activations(
    access: PrometheusAccess,
    names: MetricNames,
    since: float,
    defenses: list[str] | None,
    at: float | None = None,
) -> dict[str, float]:
    """Activations per defense since `since` (epoch s), from the defense events counter.

    With `defenses` None, every defense whose counter exists in that span is reported.
    """
    when = time.time() if at is None else at
    seconds = when - since
    if not 0 < seconds <= 7 * 24 * 3600:
        raise ActivityFailed(f"since must be in the last 7 days, got {since!r}")
    if defenses is None:
        selector = names.series(names.defense_events, 'kind="activated"')
        values = access.api(
            "series",
            {"match[]": selector, "start": since, "end": when},
            "list the defenses that report events",
        )
        defenses = sorted({s["defense"] for s in values if "defense" in s})
    counts: dict[str, float] = {}
    for defense in defenses:
        escaped = defense.replace("\\", "\\\\").replace('"', '\\"')
        series = names.series(names.defense_events, 'kind="activated"', f'defense="{escaped}"')
        counts[defense] = counter_growth(access, series, seconds, at=when) or 0.0
    return counts
