"""Who gets in: the cell's ingress decisions, in order, before any work is done.

0. the cell's boundary (``boundary_reinforcement``): while the control loop has it
   reinforced, requests of users homed in another cell (failed over by the gateway) are
   refused (503), critical ones included: they belong to another failure domain;
1. staged recovery from a metastable state (``metastable_recovery``): while ingress is
   paused or restored step by step (or held for an operator after repeated relapses),
   non-critical requests beyond the admitted share wait outside (503);
2. the memory guardrail (``memory_guardrail``) and 3. the GC-pressure breaker
   (``gc_breaker``): above their thresholds only critical work gets in (503);
4. the complexity-budget load shedder (``load_shedding``): sheds by priority, preserving
   payments (critical) and the core feature (profiles) (429).

A refusal costs nothing downstream: no working set, no GC pause, no dependency call.
429 is the shedder's answer because the cell is choosing, by priority, which healthy work
to drop; 503 says the cell itself cannot take the work right now. Both carry Retry-After.
"""

from __future__ import annotations

from dataclasses import dataclass

from chaosemergence.app.boundary import CellBoundary
from chaosemergence.app.memory import MemoryModel
from chaosemergence.defenses import LoadShedder
from chaosemergence.defenses.control import StagedRecovery

__all__ = ["ROUTE_CLASSES", "Admission", "Refusal", "RouteClass"]


@dataclass(frozen=True, slots=True)
class RouteClass:
    """A route's priority for the shedder and the feature it belongs to."""

    priority: str
    feature: str

    @property
    def critical(self) -> bool:
        return self.priority == "critical"


ROUTE_CLASSES: dict[str, RouteClass] = {
    "payments": RouteClass("critical", "payments"),
    "profile": RouteClass("medium", "core"),
    "recommendations": RouteClass("low", "recommendations"),
}

SHED_STATUS = 429
UNAVAILABLE_STATUS = 503


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request was turned away, and how to answer it."""

    defense: str
    status: int
    retry_after: int
    reason: str


class Admission:
    """Ingress decisions of one cell, with a count of refusals per defense (event loop only)."""

    def __init__(
        self,
        recovery: StagedRecovery,
        memory: MemoryModel,
        shedder: LoadShedder,
        boundary: CellBoundary | None = None,
    ) -> None:
        self.recovery = recovery
        self.memory = memory
        self.shedder = shedder
        self.boundary = boundary
        self.refused: dict[str, int] = {
            **({boundary.name: 0} if boundary is not None else {}),
            recovery.name: 0,
            memory.guardrail.name: 0,
            memory.gc_breaker.name: 0,
            shedder.name: 0,
        }

    def check(self, route: str, *, foreign: bool = False) -> Refusal | None:
        """None to let the request in, else the refusal to answer with.

        ``foreign``: the request's user is homed in another cell.
        """
        cls = ROUTE_CLASSES[route]
        if self.boundary is not None and not self.boundary.admits(foreign):
            return self._refuse(
                self.boundary.name,
                UNAVAILABLE_STATUS,
                "cell boundary reinforced: service temporarily unavailable for your region "
                "(users of another cell are not served here)",
            )
        if not cls.critical and not self.recovery.should_admit():
            return self._refuse(
                self.recovery.name,
                UNAVAILABLE_STATUS,
                "ingress held for manual intervention after repeated relapses"
                if self.recovery.waiting_for_operator
                else f"ingress paused for metastable recovery ({self.recovery.admit_fraction:.0%} "
                "admitted)",
            )
        memory = self.memory.admit(cls.critical)
        if memory is not None:
            return self._refuse(
                memory,
                UNAVAILABLE_STATUS,
                f"{memory} refuses non-critical work (memory at {self.memory.usage:.0%})",
            )
        if not self.shedder.admit(cls.priority, cls.feature):
            return self._refuse(
                self.shedder.name,
                SHED_STATUS,
                f"shed {cls.priority}-priority work at level {self.shedder.level.name}",
            )
        return None

    def _refuse(self, defense: str, status: int, reason: str) -> Refusal:
        self.refused[defense] += 1
        return Refusal(defense, status, 1, reason)
