"""Argument checks shared by the activities: bad input fails before anything is injected.

The limits and schemas are the contract's (``chaosemergence.contract``), the very ones the
services check requests with: an activity refuses what a service would refuse, naming the
argument, and accepts what it would accept (tests/test_contract.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaosemergence.contract import (
    InvalidField,
    cell_index_schema,
    cells_schema,
    check,
    correlation_window_schema,
    metric_window_schema,
    names_schema,
    number_schema,
)

__all__ = [
    "check_argument",
    "check_cell",
    "check_cells",
    "check_correlation_window",
    "check_names",
    "check_number",
    "check_window",
    "numeric",
    "parse_switch",
    "refused_as_activity",
]


@contextlib.contextmanager
def refused_as_activity() -> Iterator[None]:
    """The contract's ``InvalidField`` (naming the argument) as Chaos Toolkit's ActivityFailed."""
    try:
        yield
    except InvalidField as error:
        raise ActivityFailed(str(error)) from None


def numeric(value: Any) -> Any:
    """A number given as text (``chaos run --var duration=60``) as a number; else unchanged."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value else number
    return value


def check_argument(name: str, value: Any, schema: dict[str, Any]) -> Any:
    """``value`` when it satisfies the contract's ``schema``; ActivityFailed naming ``name``."""
    value = numeric(value)
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    with refused_as_activity():
        return check(schema, value, name)


def check_number(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False
) -> float:
    """`value` as a float when low <(=) value <= high; ActivityFailed naming `name` otherwise."""
    return float(check_argument(name, value, number_schema(low, high, exclusive_low=low_open)))


def check_window(value: Any, name: str = "window") -> float:
    """A metrics window in seconds, at most what a service keeps (``/admin/increase``)."""
    return float(check_argument(name, value, metric_window_schema()))


def check_correlation_window(value: Any, name: str = "window") -> float:
    """A correlation window in seconds, at most what a service correlates over."""
    return float(check_argument(name, value, correlation_window_schema()))


def check_cell(value: Any) -> int:
    """One cell's index, in the largest system there is (the service checks its own size)."""
    return int(check_argument("cell", value, cell_index_schema()))


def check_cells(cells: Any) -> list[int] | None:
    """None (every cell) or a list of cell indexes (one index alone as a list of one)."""
    if isinstance(cells, int) and not isinstance(cells, bool):
        cells = [cells]
    checked: list[int] | None = check_argument("cells", cells, cells_schema())
    return checked


def check_names(names: Any) -> list[str] | None:
    """None (every defense) or a list of defense names (one name alone as a list of one)."""
    if isinstance(names, str):
        names = [names]
    checked: list[str] | None = check_argument("names", names, names_schema())
    return checked


def parse_switch(name: str, value: Any) -> bool:
    """true/false, or the strings "on"/"off" (as `--var defenses=off` gives them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "true", "yes", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("off", "false", "no", "0"):
        return False
    raise ActivityFailed(f"{name} must be on/off or true/false, got {value!r}")
