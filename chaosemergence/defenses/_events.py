"""Record defense activations and deactivations as timestamped events."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ._recorder import NULL_RECORDER, MetricsRecorder
from ._types import Clock

__all__ = ["DefenseEvent", "EventKind", "EventListener", "EventLog"]

EventKind = Literal["activated", "deactivated"]
_KINDS: frozenset[str] = frozenset({"activated", "deactivated"})


@dataclass(frozen=True, slots=True)
class DefenseEvent:
    """One activation or deactivation of a defense, with when and why."""

    defense: str
    kind: EventKind
    at: float
    reason: str
    detail: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def as_dict(self) -> dict[str, object]:
        """Return the event as a JSON-able dict."""
        return {
            "defense": self.defense,
            "kind": self.kind,
            "at": self.at,
            "reason": self.reason,
            "detail": dict(self.detail),
        }


EventListener = Callable[[DefenseEvent], None]


class EventLog:
    """A bounded, thread-safe log of defense events that listeners can follow.

    ``clock`` is wall-clock time by default, because the events are read by people
    and by Chaos Toolkit probes running in another process.
    """

    def __init__(
        self,
        clock: Clock = time.time,
        maxlen: int = 2000,
        *,
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        if maxlen < 1:
            msg = f"maxlen must be >= 1, got {maxlen!r}"
            raise ValueError(msg)
        self._clock = clock
        self._recorder = recorder
        self.maxlen = maxlen
        # Guarded by _lock: the admin endpoint may read while the loop records.
        self._lock = threading.Lock()
        self._events: deque[DefenseEvent] = deque(maxlen=maxlen)
        # Guarded by _lock; every recorded event is passed to each listener.
        self._listeners: list[EventListener] = []
        # Guarded by _lock: events recorded since creation or the last clear().
        self._recorded = 0

    def record(self, defense: str, kind: EventKind, reason: str, **detail: object) -> DefenseEvent:
        """Append an event stamped with the log's clock and notify listeners."""
        if kind not in _KINDS:
            msg = f"kind must be 'activated' or 'deactivated', got {kind!r}"
            raise ValueError(msg)
        event = DefenseEvent(defense, kind, self._clock(), reason, MappingProxyType(detail))
        with self._lock:
            self._events.append(event)
            self._recorded += 1
            listeners = tuple(self._listeners)
        # Counted even when the bounded log drops it later: activations are a counter.
        self._recorder.increment("events", defense=defense, kind=kind)
        for listener in listeners:
            listener(event)
        return event

    def since(self, t: float) -> list[DefenseEvent]:
        """Return the events recorded at or after time ``t``, oldest first."""
        with self._lock:
            return [e for e in self._events if e.at >= t]

    def all(self) -> list[DefenseEvent]:
        """Return every retained event, oldest first."""
        with self._lock:
            return list(self._events)

    def subscribe(self, listener: EventListener) -> None:
        """Call ``listener`` with every event recorded from now on."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: EventListener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def clear(self) -> None:
        """Drop every retained event (listeners stay subscribed)."""
        with self._lock:
            self._events.clear()
            self._recorded = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def snapshot(self) -> dict[str, object]:
        """Return the log's size and its most recent events as JSON-able data."""
        with self._lock:
            recent = [e.as_dict() for e in list(self._events)[-50:]]
            return {"retained": len(self._events), "recorded": self._recorded, "recent": recent}
