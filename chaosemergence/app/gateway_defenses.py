"""The gateway's own defenses: its cell breakers, retry budget and cellular routing.

Two views of them, one per event loop (docs/trust.md). ``GatewayDefenses`` is the objects
themselves, owned by the data-plane loop: the admin API changes them only by handing the
change to that loop, and reads them through the snapshot the loop publishes.
``GatewaySwitches`` is what the admin API last set (its own thread, behind a lock).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from chaosemergence.app.metrics import BREAKER_STATE_VALUES, GatewayMetrics
from chaosemergence.app.routing import Routing
from chaosemergence.app.settings import SystemSettings
from chaosemergence.defenses import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    EventLog,
    RetryBudget,
)

__all__ = ["GatewayDefenses", "GatewaySwitches"]

# The gateway's retry budget when defenses are on: retries at most 10% of requests (plus a
# floor of one per second), as the cells' own budgets allow.
GATEWAY_RETRY_RATIO = 0.1
# Containment is recorded once per cell per burst, not per request.
CONTAINMENT_NOTE_SECONDS = 5.0
# The gateway -> cell breakers: half of at least 5 calls in 5 s failed (docs/defenses.md).
GATEWAY_BREAKER_WINDOW_SECONDS = 5.0
GATEWAY_BREAKER_MINIMUM_CALLS = 5
# A breaker trip: entering one of these states.
TRIP_STATES = (BreakerState.OPEN, BreakerState.EMERGENCY)
# The gateway's own switches, as the admin API names them.
GATEWAY_SWITCHES = ("cellular_routing", "retry_budget", "circuit_breaker")


class GatewayDefenses:
    """The data plane's defenses and the snapshot of them it publishes for the admin API.

    Owned by the data-plane loop, except ``events`` (locked inside) and ``published``
    (replaced whole by the loop, read once by the admin API).
    """

    def __init__(self, settings: SystemSettings, metrics: GatewayMetrics, routing: Routing):
        self.routing = routing
        self._metrics = metrics
        # The gateway's own defense events (its retry budget, cellular containment), merged
        # into /admin/events under the cell "gateway".
        self.events = EventLog()
        # The gateway's retry layer (the same layer in both modes; the budget governs it
        # while the retry_budget defense is on).
        self.retry_budget = RetryBudget(ratio=GATEWAY_RETRY_RATIO, events=self.events)
        self._contained_noted: dict[int, float] = {}
        # One breaker per cell, in front of the gateway -> cell hop (the seed's "circuit
        # breakers on all service boundaries"); a trip is also its own event and counter.
        self.breakers = [
            CircuitBreaker(
                f"gateway.cell{i}",
                # A failure rate over a short window, not 5 in a row: a busy cell's brief
                # stall (a few timeouts among hundreds of answers) must not cut all its users
                # off for the open duration; a hung or dead cell fails every call and trips
                # within 5.
                BreakerConfig(
                    failure_threshold=0,
                    window_seconds=GATEWAY_BREAKER_WINDOW_SECONDS,
                    minimum_calls=GATEWAY_BREAKER_MINIMUM_CALLS,
                    slow_call_seconds=settings.cell_timeout_seconds,
                ),
                events=self.events,
                listeners=(self._on_breaker,),
            )
            for i in range(settings.cells)
        ]
        for index in range(settings.cells):
            metrics.breaker_state.labels(str(index)).set(0)
        self.published: dict[str, Any] = dict.fromkeys(
            ("at", "retry_budget", "breakers", "cellular_routing", "tasks")
        )

    def _on_breaker(
        self, breaker: CircuitBreaker, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        cell = breaker.name.removeprefix("gateway.cell")
        self._metrics.breaker_state.labels(cell).set(BREAKER_STATE_VALUES[new.value])
        if new in TRIP_STATES:
            self._metrics.breaker_trips.labels(cell, new.value).inc()
            self.events.record(
                "breaker_trip",
                "activated",
                f"{breaker.name} tripped {old.value} -> {new.value}: {reason}",
                breaker=breaker.name,
                boundary=f"cell{cell}",
                state=new.value,
                previous=old.value,
            )

    def note_containment(self, cell: int) -> None:
        """Cellular routing kept a failing cell's users there instead of failing over."""
        now = time.monotonic()
        last = self._contained_noted.get(cell, -CONTAINMENT_NOTE_SECONDS)
        if now - last >= CONTAINMENT_NOTE_SECONDS:
            self.events.record(
                "cellular_routing",
                "activated",
                f"contained cell {cell}'s failure: its users were not failed over to other cells",
                cell=cell,
            )
        self._contained_noted[cell] = now

    def publish(self) -> None:
        """Data plane: what the admin API may read of the loop's state (one reference swap)."""
        self.published = {
            "at": time.time(),
            "retry_budget": self.retry_budget.snapshot(),
            "breakers": {str(i): b.snapshot() for i, b in enumerate(self.breakers)},
            "cellular_routing": self.routing.cellular,
            "tasks": len(asyncio.all_tasks()),
        }

    def apply(self, names: list[str] | None, enabled: bool) -> None:
        """Data plane: set the gateway's own defenses (runs on its loop, via the handoff)."""
        if names is None or "cellular_routing" in names:
            self.routing.cellular = enabled
        if names is None or "retry_budget" in names:
            self.retry_budget.enabled = enabled
        if names is None or "circuit_breaker" in names:
            for breaker in self.breakers:
                breaker.enabled = enabled
        self.publish()

    def reset(self) -> None:
        """Data plane: every gateway defense on, its breakers and retry budget forgotten."""
        self.retry_budget.enabled = True
        self.retry_budget.reset()
        for breaker in self.breakers:
            breaker.enabled = True
            breaker.reset()
        self.routing.cellular = True
        self.publish()


class GatewaySwitches:
    """What the admin API last set of the gateway's own switches (the data plane gets each
    change through the handoff). Guarded by ``_lock``: the admin thread writes, any reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._on = dict.fromkeys(GATEWAY_SWITCHES, True)

    def set(self, names: list[str] | None, enabled: bool) -> None:
        """Switch the named ones (None: all of them)."""
        with self._lock:
            for name in self._on:
                if names is None or name in names:
                    self._on[name] = enabled

    def all_on(self) -> None:
        with self._lock:
            self._on.update(dict.fromkeys(self._on, True))

    def copy(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._on)

    def any_off(self) -> bool:
        with self._lock:
            return not all(self._on.values())
