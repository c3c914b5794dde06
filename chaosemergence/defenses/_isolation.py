"""How well cells stay independent failure domains: the seed's isolation score and cascade risk."""

from __future__ import annotations

__all__ = ["CASCADE_ALERT", "cascade_risk", "isolation_score"]

#: The seed alerts ("Review cell isolation immediately") above this cascade risk.
CASCADE_ALERT = 0.1


def _share(x: float) -> float:
    return 0.0 if x != x or x < 0.0 else min(x, 1.0)  # x != x catches NaN


def isolation_score(cross_cell: float, total: float) -> float:
    """Return the seed's ``1 - min(cross_cell / total, 1)``: 1.0 is perfect isolation.

    ``cross_cell`` is the traffic that crossed a cell boundary (for a cell: requests it got
    for users homed in another cell), ``total`` all of the cell's traffic. No traffic at all
    crosses nothing: 1.0.
    """
    if total <= 0:
        return 1.0
    return 1.0 - _share(cross_cell / total)


def cascade_risk(cross_cell_dependencies: float, shared_resources: float) -> float:
    """Return the seed's ``0.6 x cross-cell dependencies + 0.4 x shared resources`` in [0, 1].

    Both inputs are shares in [0, 1] (clamped): 0 when the cells share nothing, 1 when all
    of it crosses a boundary. The seed alerts above ``CASCADE_ALERT`` (0.1).
    """
    return 0.6 * _share(cross_cell_dependencies) + 0.4 * _share(shared_resources)
