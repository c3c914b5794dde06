"""What a user request meets on its way into one cell, and what the cell measures of it.

The cell's boundary (users homed in another cell, failed over by the gateway), the
complexity-budget load shedder, the cell's own worker pool (what failover can overload) and
the meter the control loop reads once a second. The order of the ingress decisions is
``app/admission.py``'s; the request path itself is ``CellService.handle``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

from chaosemergence.app.admission import ROUTE_CLASSES, Admission
from chaosemergence.app.boundary import CellBoundary
from chaosemergence.app.capacity import CellCapacity
from chaosemergence.app.control import CellMeter
from chaosemergence.app.settings import SystemSettings
from chaosemergence.defenses import EventLog, LoadShedder
from chaosemergence.defenses.detect import ComplexityBudget

__all__ = ["CellIngress"]

# A burst of dropped requests is one event; a new one after this many quiet seconds.
DROPPED_NOTE_SECONDS = 5.0


class CellIngress:
    """The boundary, the shedder, the worker pool and the meter of one cell."""

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        *,
        rng: random.Random,
        events: EventLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The cell's own worker pool (0 workers = unlimited): what failover can overload.
        self.capacity = CellCapacity(
            settings.cell_workers,
            settings.cell_request_cost_ms,
            settings.cell_queue_limit,
            clock=clock,
        )
        self.shedder = LoadShedder(
            ComplexityBudget(
                request_capacity=settings.cell_request_capacity,
                user_capacity=settings.cell_user_capacity,
                data_capacity=settings.cell_data_capacity_bytes,
            ),
            clock=clock,
            rng=rng,
            events=events,
        )
        self.meter = CellMeter(clock=clock)
        self.boundary = CellBoundary(index, settings.cells, events=events)
        self.requests = 0  # every user request, refused ones included
        self._clock = clock
        self._events = events
        self._dropped_noted = -math.inf

    def note_dropped(self) -> None:
        """A request whose caller gave up was dropped: one load_shedding event per burst."""
        now = self._clock()
        if now - self._dropped_noted > DROPPED_NOTE_SECONDS:
            self._events.record(
                "load_shedding", "activated", "dropped requests whose caller had given up"
            )
        self._dropped_noted = now

    def shedding_state(self, admission: Admission) -> dict[str, Any]:
        """The ``load_shedding`` section of ``/admin/state``: the shedder, every refusal."""
        return {
            **self.shedder.snapshot(),
            "refused": dict(admission.refused),
            "priorities": {route: c.priority for route, c in ROUTE_CLASSES.items()},
        }
