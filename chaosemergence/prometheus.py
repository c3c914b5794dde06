"""Ask a Prometheus server for numbers (prometheus-api-client, with a timeout).

`query_scalar` answers one number; `increase_samples` answers what the reference system's
own `/admin/increase` answers (`{name, labels, value}` per counter and histogram series,
how much it grew over a window), so every windowed probe can read through Prometheus.
"""

from __future__ import annotations

import logging
import math
import re
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = ["SERIES_SUFFIXES", "increase_samples", "query_scalar"]

logger = logging.getLogger("chaostoolkit")

# The cumulative series of counters and histograms, as the services' own metric window keeps
# them (chaosemergence.app.window): `_created` and gauges are left out.
SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_SERIES = re.compile(r"emergence_[a-zA-Z0-9_]+(?:" + "|".join(SERIES_SUFFIXES) + ")")
# Labels Prometheus adds to every scraped series (the target's), which the services' own
# samples do not carry: summed away, as `samples_total` would sum the per-process samples.
TARGET_LABELS = ("instance", "job")


def _connect(url: str, timeout: float) -> Any:
    from prometheus_api_client import PrometheusConnect

    return PrometheusConnect(url=url, disable_ssl=True, timeout=max(1, math.ceil(timeout)))


def query_scalar(url: str, query: str, timeout: float) -> float:
    """The value of `query` as a float: a scalar or a single-sample vector; NaN for no data."""
    try:
        result = _connect(url, timeout).custom_query(query)
    except Exception as error:  # the client raises requests' and its own exceptions
        raise ActivityFailed(f"query {query!r} against {url} failed: {error}") from None
    # A scalar comes back as [timestamp, "value"]; a vector as a list of {metric, value}.
    if isinstance(result, list) and len(result) == 2 and isinstance(result[1], str):
        value = result[1]
    elif isinstance(result, list):
        if not result:
            return math.nan
        if len(result) > 1:
            raise ActivityFailed(
                f"query {query!r} against {url} returned {len(result)} series; "
                "aggregate it to one (e.g. sum(...)) to use it as a probe"
            )
        value = result[0]["value"][1]
    else:
        raise ActivityFailed(f"query {query!r} against {url} returned {result!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ActivityFailed(
            f"query {query!r} against {url} returned non-number {value!r}"
        ) from None


def increase_samples(
    url: str, seconds: float, timeout: float, *, at: float | None = None
) -> list[dict[str, Any]]:
    """How much every `emergence_*` counter and histogram series grew over the last `seconds`.

    The shape of the services' `/admin/increase`: a list of `{"name", "labels", "value"}`,
    one per series (bucket series keep their `le`), from `increase(NAME[Ns])` summed over
    the scrape targets (the gateway and every cell). `increase()` drops the metric name, so
    the names seen in the window are listed first, then each is asked for, all at the same
    evaluation time `at` (default now). Unlike the embedded window, Prometheus extrapolates
    to the window's edges and cannot see the first increment of a series born inside the
    window (it has no earlier sample at 0): the numbers are close, not identical.
    """
    if not 0 < seconds <= 900:
        raise ActivityFailed(f"window must be in (0, 900] seconds, got {seconds!r}")
    when = time.time() if at is None else at
    window = f"{round(seconds * 1000)}ms"
    prom = _connect(url, timeout)
    try:
        names = prom.get_label_values(
            "__name__",
            params={
                "match[]": '{__name__=~"emergence_.+"}',
                "start": when - seconds,
                "end": when,
            },
        )
    except Exception as error:
        raise ActivityFailed(f"listing the series in {url} failed: {error}") from None
    samples: list[dict[str, Any]] = []
    for name in sorted(n for n in names if _SERIES.fullmatch(n)):
        query = f"sum without ({', '.join(TARGET_LABELS)}) (increase({name}[{window}]))"
        try:
            result = prom.custom_query(query, params={"time": when})
        except Exception as error:
            raise ActivityFailed(f"query {query!r} against {url} failed: {error}") from None
        for series in result:
            value = float(series["value"][1])
            if math.isnan(value):
                continue
            samples.append({"name": name, "labels": dict(series["metric"]), "value": value})
    logger.debug(
        "increase over %s s from Prometheus at %s: %d series of %d names",
        seconds,
        url,
        len(samples),
        len(names),
    )
    return samples
