"""Injected faults: what can go wrong in a simulated dependency, and for how long.

Every fault carries its own expiry and is ignored once expired, so a chaos process
killed mid-experiment cannot leave a fault behind: the reference system enforces it.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Fault", "FaultTable"]

FaultKind = Literal["timeout", "latency", "error"]


@dataclass(frozen=True)
class Fault:
    """One injected fault on one dependency (or "all") of a cell."""

    id: str
    kind: FaultKind
    dependency: str
    percentage: float
    expires_at: float
    latency_ms: float = 0.0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "dependency": self.dependency,
            "percentage": self.percentage,
            "latency_ms": self.latency_ms,
            "remaining_seconds": round(max(0.0, self.expires_at - now), 3),
        }


class FaultTable:
    """The faults active in one cell; expired faults vanish on their own."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Guarded by _lock: at the gateway the admin API (its own thread) adds and clears
        # the shared dependency's faults while the data plane draws them.
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}
        self._ids = itertools.count(1)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the faults expire by."""
        return self._clock

    def add(self, request: dict[str, Any], fault_id: str | None = None) -> Fault:
        fault = Fault(
            id=fault_id or f"f{next(self._ids)}",
            kind=request["kind"],
            dependency=request["dependency"],
            percentage=request["percentage"],
            expires_at=self._clock() + request["duration"],
            latency_ms=request.get("latency_ms", 0.0),
        )
        with self._lock:
            self._faults[fault.id] = fault
        return fault

    def clear(self, fault_id: str | None = None) -> int:
        """Remove one fault (or all of them); returns how many were removed."""
        with self._lock:
            if fault_id is None:
                removed = len(self._faults)
                self._faults.clear()
                return removed
            return 1 if self._faults.pop(fault_id, None) else 0

    def active(self) -> list[Fault]:
        now = self._clock()
        with self._lock:
            expired = [fid for fid, f in self._faults.items() if f.expires_at <= now]
            for fid in expired:
                del self._faults[fid]
            return list(self._faults.values())

    def draw(self, dependency: str, rng: random.Random) -> list[Fault]:
        """The faults that hit this one call (each fires with its own percentage)."""
        return [
            f
            for f in self.active()
            if f.dependency in ("all", dependency) and rng.random() * 100 < f.percentage
        ]

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [f.as_dict(now) for f in self.active()]
