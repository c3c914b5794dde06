"""Ask a Prometheus server for one number (prometheus-api-client, with a timeout)."""

from __future__ import annotations

import math

from chaoslib.exceptions import ActivityFailed

__all__ = ["query_scalar"]


def query_scalar(url: str, query: str, timeout: float) -> float:
    """The value of `query` as a float: a scalar or a single-sample vector; NaN for no data."""
    from prometheus_api_client import PrometheusConnect

    try:
        prom = PrometheusConnect(url=url, disable_ssl=True, timeout=max(1, math.ceil(timeout)))
        result = prom.custom_query(query)
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
