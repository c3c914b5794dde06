"""A cell's boundary: whose users it serves, how isolated it is, and reinforcing it.

Every user has one home cell (the gateway's consistent-hash ring, computed here the same
way). A request for a user homed elsewhere crossed a cell boundary: the gateway failed it
over (``cellular_routing`` off). The share of such requests is what the seed's
``get_isolation_score`` measures (1.0 = nothing crosses), and with the share of the cell's
calls to a shared dependency that fail, the cell's cascade risk.

"Reinforce boundaries" is the control loop's answer to a cascade forming (the cascade
pattern, or the phase defenses): while reinforced, the cell refuses requests of users
homed in another cell (503), as the seed's cells do ("no failover to prevent cascade: the
user gets an error but the system survives"), so failover load cannot take it down with
the cell that failed. Switch: ``boundary_reinforcement``.
"""

from __future__ import annotations

from chaosemergence.app.routing import Routing
from chaosemergence.defenses import EventLog

__all__ = ["DEFENSE", "CellBoundary"]

DEFENSE = "boundary_reinforcement"


class CellBoundary:
    """One cell's boundary (event loop only)."""

    def __init__(self, index: int, cells: int, *, events: EventLog | None = None) -> None:
        self.index = index
        self.name = DEFENSE
        self._routing = Routing(cells)
        self._events = events
        self.enabled = True
        self.reinforced = False
        self.reason = ""
        # Counters (read by the control loop as deltas, and by the metrics collector).
        self.arrivals = 0
        self.foreign_arrivals = 0
        self.refused = 0
        self.reinforcements = 0

    def home(self, user_id: str) -> int:
        """The cell the gateway's ring gives ``user_id``."""
        return self._routing.home(user_id)

    def arrive(self, user_id: str) -> bool:
        """Count one request; True when its user is homed in another cell (it crossed)."""
        self.arrivals += 1
        foreign = self.home(user_id) != self.index
        self.foreign_arrivals += foreign
        return foreign

    def admits(self, foreign: bool) -> bool:
        """Whether a request gets past the boundary (refused: counted)."""
        if foreign and self.reinforced:
            self.refused += 1
            return False
        return True

    def reinforce(self, on: bool, reason: str) -> None:
        """Reinforce the boundary (or relax it); records the change. No-op when disabled."""
        if on and not self.enabled:
            return
        if on == self.reinforced:
            return
        self.reinforced = on
        self.reason = reason
        if on:
            self.reinforcements += 1
        if self._events is not None:
            if on:
                self._events.record(DEFENSE, "activated", f"reinforced: {reason}")
            else:
                self._events.record(DEFENSE, "deactivated", f"relaxed: {reason}")

    def reset(self) -> None:
        self.reinforce(False, "reset")

    def snapshot(self) -> dict[str, object]:
        return {
            "name": DEFENSE,
            "enabled": self.enabled,
            "reinforced": self.reinforced,
            "reason": self.reason,
            "arrivals": self.arrivals,
            "foreign_arrivals": self.foreign_arrivals,
            "refused": self.refused,
            "reinforcements": self.reinforcements,
        }
