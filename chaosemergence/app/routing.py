"""Which cell serves a user: cellular (one home cell, no failover) or the naive shared mode.

Cellular routing is the cascade defense: a user always goes to the cell the hash ring
gives, and a failed cell fails only its own users. Switched off (`cellular_routing`), the
gateway behaves like a plain load balancer over interchangeable instances: it tries the
user's home first, then fails over to the other live instances in ring order, which moves
a dead or failing instance's load onto the others.
"""

from __future__ import annotations

from collections.abc import Callable

from chaosemergence.defenses import HashRing

__all__ = ["Routing"]


class Routing:
    """The ordered list of cells to try for one user."""

    def __init__(self, cells: int) -> None:
        self.cells = cells
        self._ring = HashRing([str(i) for i in range(cells)])
        # Flipped by the admin API (event loop only): True = cellular, no failover.
        self.cellular = True

    def home(self, user_id: str) -> int:
        return int(self._ring.node_for(user_id))

    def candidates(self, user_id: str, alive: Callable[[int], bool]) -> list[int]:
        """Cells to try in order: the home cell alone, or (shared mode) every live instance."""
        home = self.home(user_id)
        if self.cellular:
            return [home]
        ring_order = [(home + step) % self.cells for step in range(self.cells)]
        live = [cell for cell in ring_order if alive(cell)]
        return live or [home]
