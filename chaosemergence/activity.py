"""Argument checks shared by the activities: bad input fails before anything is injected."""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed

__all__ = ["check_cells", "check_names", "check_number", "parse_switch"]


def check_number(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False
) -> float:
    """`value` as a float when low <(=) value <= high; ActivityFailed naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ActivityFailed(f"{name} must be a number, got {value!r}") from None
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ActivityFailed(f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
    return float(value)


def check_cells(cells: Any) -> list[int] | None:
    """None (every cell) or a list of non-negative cell indexes."""
    if cells is None:
        return None
    if isinstance(cells, int) and not isinstance(cells, bool):
        cells = [cells]
    if (
        not isinstance(cells, list)
        or not cells
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cells)
    ):
        raise ActivityFailed(f"cells must be null or a list of cell indexes, got {cells!r}")
    return cells


def check_names(names: Any) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ActivityFailed(f"names must be null or a list of defense names, got {names!r}")
    return names


def parse_switch(name: str, value: Any) -> bool:
    """true/false, or the strings "on"/"off" (as `--var defenses=off` gives them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "yes", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("off", "false", "no", "0"):
        return False
    raise ActivityFailed(f"{name} must be on/off or true/false, got {value!r}")
