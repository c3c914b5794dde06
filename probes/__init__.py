"""Chaos Toolkit probes: numbers and booleans for YAML tolerances, read from the services.

Windowed probes read the services' own metrics by default (`/admin/increase`, the same
increase over a window that Prometheus' `increase()` gives); with `prometheus_url`
configured, they ask Prometheus instead (`increase()` over the emergence_* counters and
histogram buckets; `latency_percentile` its own `histogram_quantile` query), as does
`query_prometheus`.
"""

import logging
import math
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosemergence.activity import (
    check_cell,
    check_cells,
    check_correlation_window,
    check_names,
    check_number,
    check_window,
)
from chaosemergence.client import AdminClient
from chaosemergence.measure import (
    OPTIONAL_ROUTES,
    USER_CRITICAL_ROUTES,
    bucket_counts,
    histogram_quantile,
    percent_degraded,
    percent_failed,
    samples_total,
)
from chaosemergence.probes_prometheus import (
    MetricNames,
    activations,
    counter_growth,
    latency_quantile,
    metric_names,
)
from chaosemergence.prometheus import PrometheusAccess, increase_samples, query_scalar
from chaosemergence.settings import (
    BASELINE_KEY,
    BASELINE_WINDOW_KEY,
    EXPERIMENT_START_KEY,
    ExtensionSettings,
)

__all__ = [
    "cache_hit_rate",
    "cells_down",
    "check_defense_activation",
    "coalescing_ratio",
    "computations_per_key",
    "defense_state",
    "dependency_work",
    "emergence_figures",
    "failure_radius_by_cell",
    "failure_radius_outside",
    "goodput",
    "goodput_ratio",
    "latency_growth",
    "latency_percentile",
    "lost_writes",
    "measure_failure_radius",
    "memory_spiral",
    "metastable_state",
    "query_prometheus",
    "recovery_seconds",
    "retry_amplification",
    "route_failure_radius",
    "service_correlation",
    "shared_load_peak_to_mean",
]

logger = logging.getLogger("chaostoolkit")


# A windowed probe needs this many user requests in its window to measure anything: with
# fewer (Locust died, traffic never started) it fails instead of returning a passing zero.
MIN_REQUESTS = 20
# Paths whose refusals users feel as failures: a shed payment or profile is a failure; a
# shed recommendation (an optional feature, dropped on purpose) is counted as degraded.


def _increase(
    window: float, configuration: Configuration, secrets: Secrets
) -> list[dict[str, Any]]:
    """Every counter and histogram series' growth over the last `window` s: from Prometheus
    when `prometheus_url` is configured, otherwise from the services' own window."""
    seconds = check_window(window)
    prometheus = PrometheusAccess.from_chaos(configuration, secrets)
    if prometheus is not None:
        return increase_samples(prometheus, seconds)
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    answer = AdminClient(settings).get(
        "/admin/increase", what="read metrics window", params={"seconds": seconds}
    )
    samples: list[dict[str, Any]] = answer["samples"]
    return samples


def _measured(
    probe: str,
    window: float,
    min_requests: float,
    configuration: Configuration,
    secrets: Secrets,
) -> list[dict[str, Any]]:
    """The window's samples, or ActivityFailed when it holds too few requests to measure."""
    minimum = check_number("min_requests", min_requests, 1, 1e9)
    samples = _increase(window, configuration, secrets)
    _require_requests(probe, samples, window, minimum)
    return samples


def _require_requests(
    probe: str, samples: list[dict[str, Any]], window: float, minimum: float, **labels: str
) -> float:
    seen = samples_total(samples, "emergence_requests_total", **labels)
    if seen < minimum:
        which = f" ({labels})" if labels else ""
        raise ActivityFailed(
            f"{probe}: {seen:.0f} user request(s){which} in the last {window:g} s, fewer than "
            f"min_requests={minimum:.0f}: nothing to measure (is the traffic running?)"
        )
    return seen


def _service(
    probe: str,
    metrics: dict[str, Any] | None,
    configuration: Configuration,
    secrets: Secrets,
) -> tuple[PrometheusAccess, MetricNames] | None:
    """Prometheus and the service's own metric names when `prometheus_metrics` (configuration)
    or the probe's `metrics` argument names them; None for the reference system's metrics."""
    names = metric_names(configuration, metrics)
    if names is None:
        return None
    access = PrometheusAccess.from_chaos(configuration, secrets)
    if access is None:
        raise ActivityFailed(
            f"{probe}: the service's metrics are named (prometheus_metrics / metrics), so the "
            "probe reads Prometheus: set prometheus_url (or prometheus_base_url)"
        )
    return access, names


def _service_requests(
    probe: str,
    access: PrometheusAccess,
    names: MetricNames,
    seconds: float,
    minimum: float,
) -> float:
    """The service's requests in the window, or ActivityFailed when fewer than `minimum`."""
    series = names.series(names.requests)
    seen = counter_growth(access, series, seconds)
    if seen is None or seen < minimum:
        counted = "no series" if seen is None else f"{seen:.0f} request(s)"
        raise ActivityFailed(
            f"{probe}: Prometheus at {access.url} has {counted} of {series} in the last "
            f"{seconds:g} s, fewer than min_requests={minimum:.0f}: nothing to measure "
            "(is the traffic running, and are the metric names right?)"
        )
    return seen


def _service_count(
    probe: str, access: PrometheusAccess, series: str, seconds: float, key: str
) -> float:
    """A mechanism counter's growth; ActivityFailed when the series does not exist at all."""
    grown = counter_growth(access, series, seconds)
    if grown is None:
        raise ActivityFailed(
            f"{probe}: Prometheus at {access.url} has no series {series} in the last "
            f"{seconds:g} s (check prometheus_metrics.{key})"
        )
    return grown


def measure_failure_radius(
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Percentage of user requests that failed in the last `window` seconds.

    Failed: a 5xx or no answer on any path, or a shed (429) payment or profile. A shed
    optional feature (recommendations) is degraded, not failed (see `emergence_figures`).
    Fails when the window holds fewer than `min_requests` requests.

    With the service's own metric names (`prometheus_metrics` or `metrics`): the share of
    `requests` whose status label matches `failed_status`, from Prometheus.
    """
    service = _service("measure_failure_radius", metrics, configuration, secrets)
    if service is not None:
        access, names = service
        seconds = check_window(window)
        minimum = check_number("min_requests", min_requests, 1, 1e9)
        total = _service_requests("measure_failure_radius", access, names, seconds, minimum)
        failed = counter_growth(access, names.failed(), seconds) or 0.0
        return round(100.0 * min(failed, total) / total, 3)
    samples = _measured("measure_failure_radius", window, min_requests, configuration, secrets)
    return percent_failed(samples)


def failure_radius_by_cell(
    window: float = 30, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, float]:
    """Percentage of failed user requests per cell in the last `window` seconds."""
    samples = _measured("failure_radius_by_cell", window, 1, configuration, secrets)
    cells = sorted(
        {s["labels"]["cell"] for s in samples if s["name"] == "emergence_requests_total"}, key=int
    )
    return {cell: percent_failed(samples, cell=cell) for cell in cells}


def check_defense_activation(
    defenses: list[str] | None = None,
    since: float | None = None,
    source: str | None = None,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> bool:
    """True when every named defense (all of them when null) activated since `since`.

    Fails (ActivityFailed naming them) when any did not: a defended run whose defense never
    acted proves nothing. `since` is epoch seconds; it defaults to the experiment's start
    (recorded by the chaosemergence controls), else the reference system's start.

    `source`: `admin` reads the reference system's `/admin/events`; `prometheus` reads the
    `emergence_defense_events_total{kind="activated"}` counter (`defense_events` in
    `prometheus_metrics`) that any service embedding the library exports. Default: Prometheus
    when the service's metrics are named (`prometheus_metrics` or `metrics`), else admin.
    """
    names = check_names(defenses)
    if since is None:
        since = (configuration or {}).get(EXPERIMENT_START_KEY)
    if source is None:
        source = "prometheus" if metric_names(configuration, metrics) is not None else "admin"
    if source == "prometheus":
        return _activation_from_prometheus(names, since, metrics, configuration, secrets)
    if source != "admin":
        raise ActivityFailed(f"source must be admin or prometheus, got {source!r}")
    client = AdminClient.from_chaos(configuration, secrets)
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
        seen = ", ".join(sorted(counts)) or "none"
        raise ActivityFailed(
            f"check_defense_activation: {', '.join(missing)} did not activate since "
            f"{since or 0:.0f} (activated: {seen})"
        )
    return True


def _activation_from_prometheus(
    defenses: list[str] | None,
    since: float | None,
    metrics: dict[str, Any] | None,
    configuration: Configuration,
    secrets: Secrets,
) -> bool:
    access = PrometheusAccess.from_chaos(configuration, secrets)
    if access is None:
        raise ActivityFailed(
            "check_defense_activation: source prometheus needs prometheus_url "
            "(or prometheus_base_url)"
        )
    names = metric_names(configuration, metrics) or MetricNames()
    if since is None:
        raise ActivityFailed(
            "check_defense_activation: give since (epoch seconds), or run the experiment with "
            "the chaosemergence traffic control, which records the experiment's start"
        )
    start = check_number("since", since, 0, 1e12)
    counts = activations(access, names, start, defenses)
    for name, count in sorted(counts.items()):
        logger.info("defense %s activated %.0f time(s) (Prometheus at %s)", name, count, access.url)
    activated = sorted(n for n, c in counts.items() if c > 0)
    # Named defenses must each have activated; with none named, at least one must have.
    missing = [n for n in defenses if counts.get(n, 0) <= 0] if defenses is not None else []
    if missing or not activated:
        what = f"{', '.join(missing)} did not activate" if missing else "no defense activated"
        raise ActivityFailed(
            f"check_defense_activation: {what} since {start:.0f} according to "
            f"{names.defense_events} in Prometheus at {access.url} "
            f"(activated: {', '.join(activated) or 'none'})"
        )
    return True


def latency_percentile(
    quantile: float = 0.99,
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The `quantile` of user-visible latency over the last `window` seconds, in milliseconds.

    From Prometheus when `prometheus_url` is configured, otherwise computed from the
    gateway's own histogram the way `histogram_quantile` over a `rate()` window does.
    Fails when the window holds fewer than `min_requests` requests.
    """
    q = check_number("quantile", quantile, 0, 1)
    seconds = check_window(window)
    minimum = check_number("min_requests", min_requests, 1, 1e9)
    service = _service("latency_percentile", metrics, configuration, secrets)
    prometheus = PrometheusAccess.from_chaos(configuration, secrets)
    if service is not None:
        access, names = service
        _service_requests("latency_percentile", access, names, seconds, minimum)
        value = latency_quantile(access, names, q, seconds, "latency_percentile")
    elif prometheus is not None:
        seen = query_scalar(prometheus, f"sum(increase(emergence_requests_total[{int(seconds)}s]))")
        if math.isnan(seen) or seen < minimum:
            raise ActivityFailed(
                f"latency_percentile: Prometheus saw {seen:.0f} user request(s) in the last "
                f"{seconds:g} s, fewer than min_requests={minimum:.0f}: nothing to measure"
            )
        query = (
            f"histogram_quantile({q}, sum by (le) "
            f"(rate(emergence_request_duration_seconds_bucket[{int(seconds)}s])))"
        )
        value = query_scalar(prometheus, query)
        logger.info("latency_percentile: q%s from Prometheus at %s", q, prometheus.url)
    else:
        samples = _measured("latency_percentile", seconds, minimum, configuration, secrets)
        value = histogram_quantile(q, bucket_counts(samples, "emergence_request_duration_seconds"))
    if math.isnan(value):
        raise ActivityFailed(f"latency_percentile: no latency observed in the last {seconds:g} s")
    return round(value * 1000.0, 3)


def query_prometheus(
    query: str, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Run a PromQL query against `prometheus_url`; its value as a float (scalar or one sample)."""
    prometheus = PrometheusAccess.from_chaos(configuration, secrets)
    if prometheus is None:
        raise ActivityFailed(
            "query_prometheus needs prometheus_url (or prometheus_base_url) in the configuration"
        )
    if not isinstance(query, str) or not query.strip():
        raise ActivityFailed(f"query must be a non-empty PromQL string, got {query!r}")
    return query_scalar(prometheus, query)


def retry_amplification(
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Dependency attempts (retries included) per user request over the last `window` seconds.

    Mechanism evidence of a retry storm (1 = every request costs one call when nothing is
    retried). Fails when the window holds fewer than `min_requests` requests.

    With the service's own metric names: `attempts` (outgoing calls, retries included) per
    `requests`, from Prometheus.
    """
    service = _service("retry_amplification", metrics, configuration, secrets)
    if service is not None:
        access, names = service
        seconds = check_window(window)
        minimum = check_number("min_requests", min_requests, 1, 1e9)
        total = _service_requests("retry_amplification", access, names, seconds, minimum)
        series = names.series(names.need("attempts", "retry_amplification"))
        attempts = _service_count("retry_amplification", access, series, seconds, "attempts")
        return round(attempts / total, 3)
    samples = _measured("retry_amplification", window, min_requests, configuration, secrets)
    requests = samples_total(samples, "emergence_requests_total")
    attempts = samples_total(samples, "emergence_dependency_attempts_total")
    gateway_retries = samples_total(samples, "emergence_gateway_retries_total")
    return round((attempts + gateway_retries) / requests, 3)


def coalescing_ratio(
    window: float = 30,
    min_misses: int = 10,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Backend computations per cache-miss request in the last `window` s (1 = no coalescing).

    Counts the computations users' misses triggered (prewarming is counted apart). Fails
    with fewer than `min_misses` misses in the window: there was no herd to measure.
    """
    minimum = check_number("min_misses", min_misses, 1, 1e9)
    service = _service("coalescing_ratio", metrics, configuration, secrets)
    if service is not None:
        access, names = service
        seconds = check_window(window)
        miss_series = names.series(names.need("cache_misses", "coalescing_ratio"))
        computed = names.series(names.need("computations", "coalescing_ratio"))
        misses = counter_growth(access, miss_series, seconds) or 0.0
        computations = (
            _service_count("coalescing_ratio", access, computed, seconds, "computations")
            if misses >= minimum
            else 0.0
        )
    else:
        samples = _increase(window, configuration, secrets)
        misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
        computations = samples_total(samples, "emergence_backend_computations_total")
    if misses < minimum:
        raise ActivityFailed(
            f"coalescing_ratio: {misses:.0f} cache miss(es) in the last {window} s, fewer than "
            f"min_misses={minimum:.0f}: no herd to measure"
        )
    return round(computations / misses, 3)


def lost_writes(
    min_acknowledged: int = 1, configuration: Configuration = None, secrets: Secrets = None
) -> int:
    """Number of acknowledged payments missing from the cells' databases (should be 0).

    Fails when fewer than `min_acknowledged` payments were acknowledged since the system
    started: with nothing acknowledged, nothing could be lost, and 0 would prove nothing.
    """
    minimum = check_number("min_acknowledged", min_acknowledged, 0, 1e9)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/lost-writes", what="count lost writes"
    )
    unreadable = {c: v for c, v in answer["cells"].items() if "error" in v}
    if unreadable:
        raise ActivityFailed(f"lost_writes: cannot read cells {sorted(unreadable)}: {unreadable}")
    acknowledged = sum(int(v.get("acknowledged", 0)) for v in answer["cells"].values())
    if acknowledged < minimum:
        raise ActivityFailed(
            f"lost_writes: {acknowledged} payment(s) acknowledged, fewer than "
            f"min_acknowledged={minimum:.0f}: no write to check"
        )
    return int(answer["lost_writes"])


def defense_state(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """The whole defense picture (breakers, faults, switches, dependencies) as a dict."""
    state: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/state", what="read defense state"
    )
    state["read_at"] = time.time()
    return state


def cache_hit_rate(
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Share of profile cache lookups that hit, over the last `window` seconds (0..1).

    Fails when the window holds fewer than `min_requests` cache lookups.
    """
    minimum = check_number("min_requests", min_requests, 1, 1e9)
    samples = _increase(window, configuration, secrets)
    hits = samples_total(samples, "emergence_cache_requests_total", result="hit")
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    if hits + misses < minimum:
        raise ActivityFailed(
            f"cache_hit_rate: {hits + misses:.0f} cache lookup(s) in the last {window} s, fewer "
            f"than min_requests={minimum:.0f}: nothing to measure"
        )
    return round(hits / (hits + misses), 4)


def goodput(
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    metrics: dict[str, Any] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Successful user requests per second over the last `window` seconds.

    Fails when the window holds fewer than `min_requests` requests (successful or not).
    With the service's own metric names: `requests` whose status matches `success_status`.
    """
    seconds = check_window(window)
    service = _service("goodput", metrics, configuration, secrets)
    if service is not None:
        access, names = service
        minimum = check_number("min_requests", min_requests, 1, 1e9)
        _service_requests("goodput", access, names, seconds, minimum)
        return round((counter_growth(access, names.succeeded(), seconds) or 0.0) / seconds, 3)
    samples = _measured("goodput", seconds, min_requests, configuration, secrets)
    ok = samples_total(samples, "emergence_requests_total", outcome="success")
    return round(ok / seconds, 3)


def latency_growth(
    quantile: float = 0.99,
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """The `quantile` latency of the last `window` s divided by its steady-state value.

    Steady state is the window just before the method started (recorded by the
    reference_system control); before the method, the ratio is 1 by definition. Fails
    when the window holds fewer than `min_requests` requests.
    """
    q = check_number("quantile", quantile, 0, 1)
    baseline = (configuration or {}).get(BASELINE_KEY)
    if not baseline:
        return 1.0
    name = "emergence_request_duration_seconds"
    samples = _measured("latency_growth", window, min_requests, configuration, secrets)
    now = histogram_quantile(q, bucket_counts(samples, name))
    before = histogram_quantile(q, bucket_counts(baseline, name))
    if math.isnan(before) or before <= 0:
        raise ActivityFailed("latency_growth: the baseline window holds no request")
    if math.isnan(now):
        raise ActivityFailed(f"latency_growth: no latency observed in the last {window} s")
    return round(now / before, 3)


def service_correlation(
    window: float = 60, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Largest pairwise correlation of the cells' self-generated load on the shared dependency.

    Periodic jobs and retries: the load jitter can move (user traffic is left out). Fails
    when too few cells called the shared dependency in the window to correlate anything.
    """
    seconds = check_correlation_window(window)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/correlation", what="read service correlation", params={"window": seconds}
    )
    logger.info("service_correlation: %s", answer)
    value = answer.get("correlation")
    if value is None:
        raise ActivityFailed(
            f"service_correlation: too few calls to the shared dependency in the last "
            f"{seconds:g} s to correlate the cells"
        )
    return round(float(value), 4)


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
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Percentage of failed requests among users of every cell except `cells` (0 = contained).

    Failed as in `measure_failure_radius`. Fails when those users sent fewer than
    `min_requests` requests in the window.
    """
    excluded = {str(c) for c in (check_cells(cells) or [])}
    minimum = check_number("min_requests", min_requests, 1, 1e9)
    samples = [
        s
        for s in _increase(window, configuration, secrets)
        if s["name"] != "emergence_requests_total" or s["labels"].get("cell") not in excluded
    ]
    _require_requests("failure_radius_outside", samples, window, minimum)
    return percent_failed(samples)


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
) -> float | None:
    """Seconds from `defense`'s first activation to its last deactivation since `since`.

    Measures how long a recovery took (None when it never started; still running: the time
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
        logger.info("%s never started since %s", defense, since)
        return None
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
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, float | None]:
    """Every headline figure over the last `window` s, for the journal and the report.

    p99 (ms), failure radius (%), degraded (% optional features shed on purpose), retry
    amplification, coalescing ratio (None without misses), cache hit rate, goodput
    (successful requests/s) — all from one read of the services' own counters. Fails when
    the window holds fewer than `min_requests` requests.
    """
    seconds = check_window(window)
    samples = _measured("emergence_figures", seconds, min_requests, configuration, secrets)
    requests = samples_total(samples, "emergence_requests_total")
    attempts = samples_total(samples, "emergence_dependency_attempts_total") + samples_total(
        samples, "emergence_gateway_retries_total"
    )
    hits = samples_total(samples, "emergence_cache_requests_total", result="hit")
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    computations = samples_total(samples, "emergence_backend_computations_total")
    p99 = histogram_quantile(0.99, bucket_counts(samples, "emergence_request_duration_seconds"))
    return {
        "p99_ms": None if math.isnan(p99) else round(p99 * 1000, 1),
        "failure_radius_pct": percent_failed(samples),
        "degraded_pct": percent_degraded(samples),
        "retry_amplification": round(attempts / requests, 3),
        "coalescing_ratio": round(computations / misses, 3) if misses else None,
        "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "goodput_rps": round(
            samples_total(samples, "emergence_requests_total", outcome="success") / seconds, 2
        ),
    }


def goodput_ratio(
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Successful requests/s over the last `window` s, divided by their steady-state rate.

    Steady state is the window recorded just before the method started (reference_system
    control); before the method the ratio is 1 by definition. Fails when the window holds
    fewer than `min_requests` requests.
    """
    seconds = check_window(window)
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
    now = goodput(seconds, min_requests, configuration=configuration, secrets=secrets)
    return round(now / before, 3)


def shared_load_peak_to_mean(
    window: float = 60, configuration: Configuration = None, secrets: Secrets = None
) -> float:
    """Peak over mean of the shared dependency's arrivals per time bucket (1 = perfectly even).

    Fails when nothing reached the shared dependency in the window.
    """
    seconds = check_correlation_window(window)
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/correlation", what="read shared dependency load", params={"window": seconds}
    )
    value = answer.get("peak_to_mean")
    if not value:
        raise ActivityFailed(
            f"shared_load_peak_to_mean: no call reached the shared dependency in the last "
            f"{seconds:g} s"
        )
    return round(float(value), 3)


def memory_spiral(
    cell: int = 0,
    seconds: float = 15,
    interval: float = 1.0,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Sample one cell's memory, requests in flight and GC pauses: a death spiral's evidence.

    Run it in the background beside the trigger. Every `interval` s it reads the cell's leaked
    ballast and the working set of its requests in flight (MB), its requests in flight, the
    GC pause a request pays (ms), the share of wall time spent in GC and the memory
    guardrail's level; it returns the samples and their peaks, and the reason the cell's
    process last ended if it did meanwhile (e.g. `oom_killed`). Fails when the cell could
    never be read.
    """
    index = check_cell(cell)
    total = check_number("seconds", seconds, 0, 600, low_open=True)
    step = check_number("interval", interval, 0.1, 60)
    client = AdminClient.from_chaos(configuration, secrets)
    deadline = time.monotonic() + total
    started = time.time()
    samples: list[dict[str, Any]] = []
    exits: list[dict[str, Any]] = []
    while True:
        state = client.get("/admin/state", what=f"read cell {index}'s memory")
        cells = state.get("cells") or []
        if index >= len(cells):
            raise ActivityFailed(f"memory_spiral: no cell {index} (the system has {len(cells)})")
        entry = cells[index]
        last_exit = entry.get("last_exit")
        if last_exit and last_exit.get("at", 0) >= started and last_exit not in exits:
            exits.append(last_exit)
        body = entry.get("state") or {}
        memory = body.get("memory")
        sample: dict[str, Any] = {"t": round(time.time() - started, 1), "alive": entry["alive"]}
        if isinstance(memory, dict):
            working = memory["requests_in_flight"] * memory["working_set_bytes_per_request"]
            sample.update(
                ballast_mb=round(memory["ballast_bytes"] / 2**20, 1),
                working_set_mb=round(working / 2**20, 1),
                in_flight=memory["requests_in_flight"],
                usage_pct=round(100 * memory["usage"], 1),
                gc_pause_ms=round(memory["gc_pause_ms"], 1),
                gc_seconds=round(memory["gc_seconds_total"], 2),
                gc_share=round(float((body.get("gc_breaker") or {}).get("gc_share", 0.0)), 3),
                guardrail=(body.get("memory_guardrail") or {}).get("level"),
            )
        samples.append(sample)
        if time.monotonic() + step > deadline:
            break
        time.sleep(step)
    read = [s for s in samples if "usage_pct" in s]
    if not read:
        raise ActivityFailed(f"memory_spiral: cell {index} could not be read in {total:g} s")

    def peak(key: str) -> float:
        return float(max(s[key] for s in read))

    figures = {
        "cell": index,
        "peak_usage_pct": peak("usage_pct"),
        "peak_ballast_mb": peak("ballast_mb"),
        "peak_working_set_mb": peak("working_set_mb"),
        "peak_in_flight": peak("in_flight"),
        "peak_gc_pause_ms": peak("gc_pause_ms"),
        "peak_gc_share": peak("gc_share"),
        "gc_seconds": peak("gc_seconds"),
        "exits": [e.get("reason") for e in exits],
        "samples": samples,
    }
    logger.info(
        "memory_spiral: cell %d peaked at %.0f%% of its limit (%.0f MB leaked, %.0f MB for %.0f "
        "requests in flight), GC pauses up to %.0f ms; exits: %s",
        index,
        figures["peak_usage_pct"],
        figures["peak_ballast_mb"],
        figures["peak_working_set_mb"],
        figures["peak_in_flight"],
        figures["peak_gc_pause_ms"],
        figures["exits"] or "none",
    )
    return figures


def dependency_work(
    dependency: str = "database",
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """What `dependency`'s workers did over the last `window` s, and its queue now.

    The metastable loop's evidence: `useful_per_s` (answers a caller got), `wasted_per_s`
    (calls served after their caller gave up) and `wasted_share` of the work served;
    `timeouts_per_s`, `refused_per_s` (queue full), `dropped_per_s` (calls whose caller
    had gone, dropped unserved); `attempts_per_request` (its attempts, retries included,
    plus the gateway's retries, per user request); `queue_depth` (calls queued now, every
    cell) and `queue_by_cell`. Fails when the window holds fewer than `min_requests`
    user requests.
    """
    if not isinstance(dependency, str) or not dependency:
        raise ActivityFailed(f"dependency must be a dependency name, got {dependency!r}")
    seconds = check_window(window)
    samples = _measured("dependency_work", seconds, min_requests, configuration, secrets)
    results = "emergence_dependency_results_total"

    def rate(result: str) -> float:
        return samples_total(samples, results, dependency=dependency, result=result) / seconds

    useful, wasted = rate("success"), rate("wasted")
    requests = samples_total(samples, "emergence_requests_total")
    attempts = samples_total(
        samples, "emergence_dependency_attempts_total", dependency=dependency
    ) + samples_total(samples, "emergence_gateway_retries_total")
    state = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/state", what=f"read {dependency}'s queue"
    )
    queues = {
        str(c["index"]): int(((c.get("state") or {}).get("dependencies") or {})
                             .get(dependency, {}).get("waiting", 0))
        for c in state["cells"]
    }  # fmt: skip
    return {
        "useful_per_s": round(useful, 2),
        "wasted_per_s": round(wasted, 2),
        "wasted_share": round(wasted / (useful + wasted), 3) if useful + wasted else None,
        "timeouts_per_s": round(rate("timeout"), 2),
        "refused_per_s": round(rate("overloaded"), 2),
        "dropped_per_s": round(rate("drained"), 2),
        "attempts_per_request": round(attempts / requests, 3),
        "queue_depth": sum(queues.values()),
        "queue_by_cell": queues,
    }


def route_failure_radius(
    route: str = "payments",
    window: float = 30,
    min_requests: int = MIN_REQUESTS,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Percentage of one route's user requests that failed in the last `window` seconds.

    The same count as `measure_failure_radius` (errors, and sheds on critical and core
    paths), for `route` only: e.g. whether payments, the critical path, kept being served
    while other work was shed. Fails when the window holds fewer than `min_requests` of them.
    """
    if route not in (*USER_CRITICAL_ROUTES, *OPTIONAL_ROUTES):
        known = ", ".join((*USER_CRITICAL_ROUTES, *OPTIONAL_ROUTES))
        raise ActivityFailed(f"route must be one of {known}, got {route!r}")
    minimum = check_number("min_requests", min_requests, 1, 1e9)
    samples = _increase(window, configuration, secrets)
    _require_requests("route_failure_radius", samples, window, minimum, route=route)
    return percent_failed(samples, route=route)


def computations_per_key(
    window: float = 30,
    min_keys: int = 1,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> float:
    """Backend computations per distinct cache key missed in the last `window` seconds.

    A thundering herd's size, and evidence that can differ between modes: about 1 when the
    concurrent misses of one key share one computation (request coalescing; below 1 when
    prewarming computed some keys first), as many as there were concurrent misses when every
    miss recomputes. Computations count the ones users' misses started (prewarming apart);
    a key counts once until a value is stored for it again. Fails when fewer than `min_keys`
    distinct keys were missed in the window: there was no herd to measure.
    """
    seconds = check_window(window)
    minimum = check_number("min_keys", min_keys, 1, 1e9)
    samples = _increase(seconds, configuration, secrets)
    keys = samples_total(samples, "emergence_cache_missed_keys_total")
    computations = samples_total(samples, "emergence_backend_computations_total")
    if keys < minimum:
        raise ActivityFailed(
            f"computations_per_key: {keys:.0f} distinct key(s) missed in the last {seconds:g} s, "
            f"fewer than min_keys={minimum:.0f}: no herd to measure"
        )
    misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
    prewarmed = samples_total(samples, "emergence_prewarm_computations_total")
    logger.info(
        "computations_per_key: %.0f computations for %.0f distinct keys missed (%.0f misses, "
        "%.0f prewarm computations) in the last %g s",
        computations,
        keys,
        misses,
        prewarmed,
        seconds,
    )
    return round(computations / keys, 3)
