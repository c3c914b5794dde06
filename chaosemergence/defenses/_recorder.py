"""The small interface through which defenses report metrics, whatever the metrics system.

A defense calls ``recorder.increment(name, **labels)`` when something worth counting happens
(a breaker rejects a call, a retry is refused by its budget, a throttle rejects locally, a
defense activates). The library ships a no-op recorder (the default) and an in-memory one
(tests, ad-hoc inspection); an application adapts the interface to its own metrics system,
e.g. ``chaosemergence.defenses.metrics.PrometheusRecorder``. Names are snake_case without a
unit suffix; labels are strings.
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["NULL_RECORDER", "InMemoryRecorder", "MetricsRecorder", "NullRecorder"]

LabelSet = tuple[tuple[str, str], ...]


class MetricsRecorder(Protocol):
    """What a defense needs from a metrics system: counters and observations."""

    def increment(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with these labels."""

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        """Record one observation (a duration, a probability) of ``name``."""


class NullRecorder:
    """Records nothing: the default, so a defense costs no more than a method call."""

    def increment(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        return None

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        return None


NULL_RECORDER = NullRecorder()


class InMemoryRecorder:
    """Keeps every counter and observation in memory; thread-safe."""

    def __init__(self) -> None:
        # Guarded by _lock: recorders may be shared by defenses used from several threads.
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, LabelSet], float] = {}
        self._observations: dict[tuple[str, LabelSet], list[float]] = {}

    def increment(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def observe(self, name: str, value: float, /, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            self._observations.setdefault(key, []).append(value)

    def count(self, name: str, **labels: str) -> float:
        """The sum of counter ``name`` over every label set that includes ``labels``."""
        wanted = set(labels.items())
        with self._lock:
            return sum(
                value
                for (metric, label_set), value in self._counters.items()
                if metric == name and wanted <= set(label_set)
            )

    def observations(self, name: str, **labels: str) -> list[float]:
        """Every observation of ``name`` whose labels include ``labels``, in order per label set."""
        wanted = set(labels.items())
        with self._lock:
            return [
                value
                for (metric, label_set), values in self._observations.items()
                if metric == name and wanted <= set(label_set)
                for value in values
            ]

    def names(self) -> set[str]:
        """Every metric name recorded so far."""
        with self._lock:
            return {name for name, _ in (*self._counters, *self._observations)}
