"""Chaos Toolkit probes: numbers and booleans for YAML tolerances, read from the services.

Windowed probes read the services' own metrics by default (`/admin/increase`, the same
increase over a window that Prometheus' `increase()` gives); with `prometheus_url`
configured, `latency_percentile` and `query_prometheus` ask Prometheus instead.
"""

import logging
import math
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosemergence.activity import check_cells, check_names, check_number
from chaosemergence.client import AdminClient
from chaosemergence.measure import bucket_counts, histogram_quantile, samples_total
from chaosemergence.prometheus import query_scalar
from chaosemergence.settings import (
    BASELINE_KEY,
    BASELINE_WINDOW_KEY,
    EXPERIMENT_START_KEY,
    ExtensionSettings,
)

__all__ = [
    "cache_hit_rate",
    "check_defense_activation",
    "coalescing_ratio",
    "defense_state",
    "failure_radius_by_cell",
    "failure_radius_outside",
    "goodput",
    "latency_growth",
    "latency_percentile",
    "lost_writes",
    "measure_failure_radius",
    "metastable_state",
    "query_prometheus",
    "retry_amplification",
    "service_correlation",
]

logger = logging.getLogger("chaostoolkit")


def _increase(
    window: float, configuration: Configuration, secrets: Secrets
) -> list[dict[str, Any]]:
    seconds = check_number("window", window, 0, 900, low_open=True)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/increase", what="read metrics window", params={"seconds": seconds}
    )
    samples: list[dict[str, Any]] = answer["samples"]
    return samples


def _percent_failed(samples: list[dict[str, Any]], **labels: str) -> float:
    total = samples_total(samples, "emergence_requests_total", **labels)
    failed = samples_total(samples, "emergence_requests_total", outcome="failure", **labels)
    return round(100.0 * failed / total, 3) if total else 0.0


def measure_failure_radius(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Percentage of user requests that failed (5xx or no answer) in the last `window` seconds."""
    samples = _increase(window, configuration, secrets)
    if not samples_total(samples, "emergence_requests_total"):
        logger.warning("measure_failure_radius: no user request in the last %ss", window)
    return _percent_failed(samples)


def failure_radius_by_cell(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, float]:
    """Percentage of failed user requests per cell in the last `window` seconds."""
    samples = _increase(window, configuration, secrets)
    cells = sorted(
        {s["labels"]["cell"] for s in samples if s["name"] == "emergence_requests_total"}, key=int
    )
    return {cell: _percent_failed(samples, cell=cell) for cell in cells}


def check_defense_activation(
    defenses: list[str] | None = None,
    since: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when every named defense (all of them when null) activated since `since`.

    `since` is epoch seconds; it defaults to the experiment's start (recorded by the
    chaosemergence controls), else the reference system's start.
    """
    names = check_names(defenses)
    client = AdminClient.from_chaos(configuration, secrets)
    if since is None:
        since = (configuration or {}).get(EXPERIMENT_START_KEY)
    answer = client.get("/admin/events", what="read defense events", params={"since": since or 0})
    if names is None:
        state = client.get("/admin/state", what="read defense state")
        names = sorted(
            {n for c in state["cells"] if c["state"] for n in c["state"].get("defenses", {})}
        )
    activated = {e["defense"] for e in answer["events"] if e["kind"] == "activated"}
    missing = [n for n in names if n not in activated]
    counts: dict[str, int] = {}
    for event in answer["events"]:
        if event["kind"] == "activated":
            counts[event["defense"]] = counts.get(event["defense"], 0) + 1
    for name, count in sorted(counts.items()):
        first = next(
            e for e in answer["events"] if e["defense"] == name and e["kind"] == "activated"
        )
        logger.info(
            "defense %s activated %d time(s); first in cell %s: %s",
            name,
            count,
            first["cell"],
            first["reason"],
        )
    if missing:
        logger.warning("defenses that did not activate: %s", ", ".join(missing))
    return not missing


def latency_percentile(
    quantile: float = 0.99,
    window: float = 30,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The `quantile` of user-visible latency over the last `window` seconds, in milliseconds.

    From Prometheus when `prometheus_url` is configured, otherwise computed from the
    gateway's own histogram the way `histogram_quantile` over a `rate()` window does.
    0 when no request was served in the window.
    """
    q = check_number("quantile", quantile, 0, 1)
    seconds = check_number("window", window, 0, 900, low_open=True)
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    if settings.prometheus_url:
        query = (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(emergence_request_duration_seconds_bucket[{int(seconds)}s])))"
        )
        value = query_scalar(settings.prometheus_url, query, settings.timeout)
        logger.info("latency_percentile: q%s from Prometheus at %s", q, settings.prometheus_url)
    else:
        samples = _increase(seconds, configuration, secrets)
        value = histogram_quantile(q, bucket_counts(samples, "emergence_request_duration_seconds"))
    return 0.0 if math.isnan(value) else round(value * 1000.0, 3)


def query_prometheus(
    query: str, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Run a PromQL query against `prometheus_url`; its value as a float (scalar or one sample)."""
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    if not settings.prometheus_url:
        raise ActivityFailed("query_prometheus needs prometheus_url in the configuration")
    if not isinstance(query, str) or not query.strip():
        raise ActivityFailed(f"query must be a non-empty PromQL string, got {query!r}")
    return query_scalar(settings.prometheus_url, query, settings.timeout)


def retry_amplification(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Dependency attempts (retries included) per user request over the last `window` seconds."""
    samples = _increase(window, configuration, secrets)
    requests = samples_total(samples, "emergence_requests_total")
    attempts = samples_total(samples, "emergence_dependency_attempts_total")
    gateway_retries = samples_total(samples, "emergence_gateway_retries_total")
    if not requests:
        return 0.0
    # Every user request costs one dependency call when nothing is retried.
    return round((attempts + gateway_retries) / requests, 3)


def coalescing_ratio(
    window: float = 30,
    min_misses: int = 1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Backend computations per cache-miss request in the last `window` s (1 = no coalescing).

    Counts the computations users' misses triggered (prewarming is counted apart). With
    fewer than `min_misses` misses in the window there was no herd to coalesce: 0.
    """
    minimum = check_number("min_misses", min_misses, 0, 1e9)
    samples = _increase(window, configuration, secrets)
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    computations = samples_total(samples, "emergence_backend_computations_total")
    if not misses or misses < minimum:
        logger.info("coalescing_ratio: %d miss(es) in %ss: no herd", misses, window)
        return 0.0
    return round(computations / misses, 3)


def lost_writes(configuration: Configuration = None, secrets: Secrets = None) -> int:
    """Number of acknowledged payments missing from the cells' databases (should be 0)."""
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/lost-writes", what="count lost writes"
    )
    unreadable = {c: v for c, v in answer["cells"].items() if "error" in v}
    if unreadable:
        raise ActivityFailed(f"lost_writes: cannot read cells {sorted(unreadable)}: {unreadable}")
    return int(answer["lost_writes"])


def defense_state(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The whole defense picture (breakers, faults, switches, dependencies) as a dict."""
    state: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/state", what="read defense state"
    )
    state["read_at"] = time.time()
    return state


def cache_hit_rate(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Share of profile cache lookups that hit, over the last `window` seconds (0..1)."""
    samples = _increase(window, configuration, secrets)
    hits = samples_total(samples, "emergence_cache_requests_total", result="hit")
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    return round(hits / (hits + misses), 4) if hits + misses else 0.0


def goodput(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Successful user requests per second over the last `window` seconds."""
    seconds = check_number("window", window, 0, 900, low_open=True)
    samples = _increase(seconds, configuration, secrets)
    ok = samples_total(samples, "emergence_requests_total", outcome="success")
    return round(ok / seconds, 3)


def latency_growth(
    quantile: float = 0.99,
    window: float = 30,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The `quantile` latency of the last `window` s divided by its steady-state value.

    Steady state is the window just before the method started (recorded by the
    reference_system control); before the method, the ratio is 1 by definition.
    """
    q = check_number("quantile", quantile, 0, 1)
    baseline = (configuration or {}).get(BASELINE_KEY)
    if not baseline:
        return 1.0
    name = "emergence_request_duration_seconds"
    now = histogram_quantile(q, bucket_counts(_increase(window, configuration, secrets), name))
    before = histogram_quantile(q, bucket_counts(baseline, name))
    if math.isnan(now):
        return 0.0
    if math.isnan(before) or before <= 0:
        raise ActivityFailed("latency_growth: the baseline window holds no request")
    return round(now / before, 3)


def service_correlation(
    window: float = 60, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Largest pairwise correlation of the cells' self-generated load on the shared dependency.

    Periodic jobs and retries: the load jitter can move (user traffic is left out).
    """
    seconds = check_number("window", window, 0, 900, low_open=True)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/correlation", what="read service correlation", params={"window": seconds}
    )
    logger.info("service_correlation: %s", answer)
    value = answer.get("correlation")
    return 0.0 if value is None else round(float(value), 4)


def metastable_state(configuration: Configuration = None, secrets: Secrets = None) -> bool:
    """True while any cell's detector sees the metastable signature (low load, bad outcomes)."""
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/metastable", what="read metastable state"
    )
    for cell, condition in (answer.get("cells") or {}).items():
        if condition:
            logger.info("cell %s metastable: %s", cell, condition)
    return bool(answer["metastable"])


def failure_radius_outside(
    cells: list[int],
    window: float = 30,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Percentage of failed requests among users of every cell except `cells` (0 = contained)."""
    excluded = {str(c) for c in (check_cells(cells) or [])}
    samples = [
        s
        for s in _increase(window, configuration, secrets)
        if s["name"] != "emergence_requests_total" or s["labels"].get("cell") not in excluded
    ]
    return _percent_failed(samples)


def cells_down(configuration: Configuration = None, secrets: Secrets = None) -> int:
    """Number of cells whose process is not running right now."""
    state = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/state", what="read cell liveness"
    )
    down = [c["index"] for c in state["cells"] if not c["alive"]]
    if down:
        logger.info("cells down: %s", down)
    return len(down)


def recovery_seconds(
    defense: str = "metastable_recovery",
    since: float | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Seconds from `defense`'s first activation to its last deactivation since `since`.

    Measures how long a recovery took (0 when it never started; still running: the time
    so far). `since` defaults to the experiment's start.
    """
    if not isinstance(defense, str) or not defense:
        raise ActivityFailed(f"defense must be a defense name, got {defense!r}")
    if since is None:
        since = (configuration or {}).get(EXPERIMENT_START_KEY)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/events", what="read defense events", params={"since": since or 0}
    )
    events = [e for e in answer["events"] if e["defense"] == defense]
    started = [float(e["at"]) for e in events if e["kind"] == "activated"]
    if not started:
        return 0.0
    ended = [float(e["at"]) for e in events if e["kind"] == "deactivated" and e["at"] >= started[0]]
    still_running = not ended or max(started) > max(ended)
    end = time.time() if still_running else max(ended)
    logger.info(
        "%s: %s after %.1f s",
        defense,
        "still running" if still_running else "done",
        end - started[0],
    )
    return round(end - started[0], 3)


def emergence_figures(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, float]:
    """Every headline figure over the last `window` s, for the journal and the report.

    p99 (ms), failure radius (%), retry amplification, coalescing ratio, cache hit rate,
    goodput (successful requests/s) — all from one read of the services' own counters.
    """
    seconds = check_number("window", window, 0, 900, low_open=True)
    samples = _increase(seconds, configuration, secrets)
    requests = samples_total(samples, "emergence_requests_total")
    attempts = samples_total(samples, "emergence_dependency_attempts_total") + samples_total(
        samples, "emergence_gateway_retries_total"
    )
    hits = samples_total(samples, "emergence_cache_requests_total", result="hit")
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    computations = samples_total(samples, "emergence_backend_computations_total")
    p99 = histogram_quantile(0.99, bucket_counts(samples, "emergence_request_duration_seconds"))
    return {
        "p99_ms": 0.0 if math.isnan(p99) else round(p99 * 1000, 1),
        "failure_radius_pct": _percent_failed(samples),
        "retry_amplification": round(attempts / requests, 3) if requests else 0.0,
        "coalescing_ratio": round(computations / misses, 3) if misses else 0.0,
        "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "goodput_rps": round(
            samples_total(samples, "emergence_requests_total", outcome="success") / seconds, 2
        ),
    }


def goodput_ratio(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Successful requests/s over the last `window` s, divided by their steady-state rate.

    Steady state is the window recorded just before the method started (reference_system
    control); before the method the ratio is 1 by definition.
    """
    seconds = check_number("window", window, 0, 900, low_open=True)
    configuration = configuration or {}
    baseline = configuration.get(BASELINE_KEY)
    if not baseline:
        return 1.0
    baseline_seconds = float(configuration.get(BASELINE_WINDOW_KEY, seconds))
    before = (
        samples_total(baseline, "emergence_requests_total", outcome="success") / baseline_seconds
    )
    if before <= 0:
        raise ActivityFailed("goodput_ratio: no successful request in the baseline window")
    now = goodput(seconds, configuration, secrets)
    return round(now / before, 3)


def shared_load_peak_to_mean(
    window: float = 60, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Peak over mean of the shared dependency's arrivals per time bucket (1 = perfectly even)."""
    seconds = check_number("window", window, 0, 900, low_open=True)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/correlation", what="read shared dependency load", params={"window": seconds}
    )
    value = answer.get("peak_to_mean")
    return 0.0 if value is None else round(float(value), 3)
