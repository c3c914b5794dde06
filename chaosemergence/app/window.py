"""A rolling record of a registry's counters, so probes can ask "what happened in the last N s".

Every second the app snapshots its own counter and histogram samples; `increase(seconds)`
returns, per series, how much each grew over that window - what Prometheus' `increase()`
answers, without needing a Prometheus server.
"""

from __future__ import annotations

import bisect
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from chaosemergence.contract import MAX_METRIC_WINDOW_SECONDS

__all__ = ["MetricWindow", "SeriesKey"]

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
_CUMULATIVE_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


class MetricWindow:
    """Keeps per-second snapshots of cumulative samples for `horizon` seconds.

    A snapshot is an array of doubles (8 bytes a series) in the order series were first
    seen (``_keys``): a dict per second cost about 30 KB, and filling the 900 s horizon
    grew a cell by tens of MB (the soak, docs/trust.md). A series seen after a snapshot
    was taken is absent from it (counted as 0 there, as before).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        horizon: float = MAX_METRIC_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._horizon = horizon
        # Only touched from the event loop.
        self._times: deque[float] = deque()
        self._snapshots: deque[array[float]] = deque()
        self._keys: list[SeriesKey] = []
        self._positions: dict[SeriesKey, int] = {}

    def _collect(self) -> dict[SeriesKey, float]:
        values: dict[SeriesKey, float] = {}
        for family in self._registry.collect():
            if family.type not in ("counter", "histogram"):
                continue
            for sample in family.samples:
                if sample.name.endswith(_CUMULATIVE_SUFFIXES):
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    values[key] = float(sample.value)
        return values

    def tick(self) -> None:
        """Take one snapshot (the app calls this once a second)."""
        now = self._clock()
        self._times.append(now)
        current = self._collect()
        for key in current:
            if key not in self._positions:
                self._positions[key] = len(self._keys)
                self._keys.append(key)
        self._snapshots.append(array("d", (current.get(key, 0.0) for key in self._keys)))
        while self._times and self._times[0] < now - self._horizon:
            self._times.popleft()
            self._snapshots.popleft()

    def increase(self, seconds: float) -> list[dict[str, Any]]:
        """How much every cumulative series grew over the last `seconds` (now vs. then)."""
        current = self._collect()
        if not self._times:
            baseline: dict[SeriesKey, float] = {}
        else:
            target = self._clock() - seconds
            index = max(0, bisect.bisect_left(list(self._times), target))
            index = min(index, len(self._snapshots) - 1)
            snapshot = self._snapshots[index]
            baseline = dict(zip(self._keys, snapshot, strict=False))
        out = []
        for (name, labels), value in current.items():
            delta = value - baseline.get((name, labels), 0.0)
            if delta < 0:  # a counter reset (restarted process): count from zero
                delta = value
            out.append({"name": name, "labels": dict(labels), "value": delta})
        return out
