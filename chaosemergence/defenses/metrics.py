"""Metrics recorders: the interface every defense records through, and implementations.

``MetricsRecorder`` is the protocol (``increment`` and ``observe``); ``NULL_RECORDER``
(the default) records nothing, ``InMemoryRecorder`` keeps everything for tests.
``PrometheusRecorder`` exports the ``emergence_*`` series the Chaos Toolkit probes read
(the ``[prometheus]`` extra: ``pip install 'chaostoolkit-emergence[prometheus]'``); it is
imported on first use, so this module needs the standard library alone. The series'
names, help texts and labels are ``SHARED_SERIES``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._recorder import NULL_RECORDER, InMemoryRecorder, MetricsRecorder, NullRecorder
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
    SHARED_SERIES,
    THROTTLED_CALLS,
    Series,
)

if TYPE_CHECKING:
    from ._prometheus import PrometheusRecorder, new_family, request_series

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
    "NULL_RECORDER",
    "REQUESTS",
    "REQUEST_DURATION",
    "SHARED_SERIES",
    "THROTTLED_CALLS",
    "InMemoryRecorder",
    "MetricsRecorder",
    "NullRecorder",
    "PrometheusRecorder",
    "Series",
    "new_family",
    "request_series",
]

_NEEDS_PROMETHEUS = ("PrometheusRecorder", "new_family", "request_series")


def __getattr__(name: str) -> Any:
    if name in _NEEDS_PROMETHEUS:
        from chaosemergence.extras import require

        require("prometheus", f"chaosemergence.defenses.metrics.{name}")
        from . import _prometheus

        return getattr(_prometheus, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
