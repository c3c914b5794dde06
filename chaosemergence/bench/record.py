"""`bench-results.json`: figures, their anchors, goals, the table, and comparing two runs.

The shape (docs/bench.md) is stable so a later run can be compared with an earlier one::

    {"schema": "chaosemergence-bench/1", "created_at": ..., "command": ..., "machine": {...},
     "sections": {section: {figure: {"value", "unit", "anchor", "ratio", "goal", "met"}}}}

`anchor` names another figure of the same file ("section/figure", measured in the same run)
or is null; `ratio` is value / anchor's value; `goal` is "ratio OP number" or "value OP
number" (OP one of <=, >=, <, >) or null; `met` is whether the goal holds (null without a
goal or a value). A figure that could not be measured has value null.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "Figure", "Record", "compare", "format_comparison", "format_table", "load"]

SCHEMA = "chaosemergence-bench/1"
FIELDS = ("value", "unit", "anchor", "ratio", "goal", "met")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure, as it is written to the file."""

    value: float | None
    unit: str
    anchor: str | None = None
    ratio: float | None = None
    goal: str | None = None
    met: bool | None = None


def parse_goal(goal: str) -> tuple[str, Callable[[float, float], bool], float]:
    """("ratio" | "value", comparison, bound) from "ratio >= 0.9"; ValueError naming it."""
    parts = goal.split()
    if len(parts) != 3 or parts[0] not in ("ratio", "value") or parts[1] not in _OPERATORS:
        raise ValueError(f"goal must read '<ratio|value> <op> <number>', got {goal!r}")
    try:
        bound = float(parts[2])
    except ValueError:
        raise ValueError(f"goal must end in a number, got {goal!r}") from None
    return parts[0], _OPERATORS[parts[1]], bound


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class Record:
    """The figures of one run, section by section, in the order they were added."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Figure]] = {}

    def get(self, path: str) -> Figure:
        section, _, name = path.partition("/")
        try:
            return self.sections[section][name]
        except KeyError:
            raise KeyError(f"no figure {path!r} in this run") from None

    def add(
        self,
        section: str,
        name: str,
        value: float | None,
        unit: str,
        *,
        anchor: str | None = None,
        goal: str | None = None,
    ) -> Figure:
        """Add a figure; ``anchor`` ("section/figure") must have been added already."""
        if "/" in section or "/" in name:
            raise ValueError(f"section and figure names cannot hold '/': {section}/{name}")
        value = _finite(value)
        ratio = None
        if anchor is not None:
            base = self.get(anchor).value
            if value is not None and base:
                ratio = value / base
        met = None
        if goal is not None:
            field, compare_to, bound = parse_goal(goal)
            subject = ratio if field == "ratio" else value
            met = None if subject is None else compare_to(subject, bound)
        figure = Figure(value, unit, anchor, ratio, goal, met)
        self.sections.setdefault(section, {})[name] = figure
        return figure

    def as_json(self, command: str) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": command,
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
            "sections": {
                section: {name: asdict(figure) for name, figure in figures.items()}
                for section, figures in self.sections.items()
            },
        }

    def write(self, path: Path, command: str) -> None:
        path.write_text(json.dumps(self.as_json(command), indent=2) + "\n")


def load(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The sections of a results file; ValueError naming what is wrong with it."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a {SCHEMA} file")
    sections = data.get("sections")
    if not isinstance(sections, dict):
        raise ValueError(f"{path}: 'sections' must be a mapping")
    for section, figures in sections.items():
        for name, figure in figures.items():
            if not isinstance(figure, dict) or set(figure) != set(FIELDS):
                raise ValueError(f"{path}: {section}/{name} must have exactly {FIELDS}")
    return sections


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_table(sections: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The figures as a plain-text table, one section after another."""
    lines: list[str] = []
    header = (
        f"  {'figure':<34} {'value':>10} {'unit':<12} {'ratio':>7}  {'anchor':<40} {'goal':<14} met"
    )
    for section, figures in sections.items():
        lines.append(f"\n[{section}]")
        lines.append(header)
        for name, f in figures.items():
            lines.append(
                f"  {name:<34} {_number(f['value']):>10} {f['unit']:<12} "
                f"{_number(f['ratio']):>7}  {f['anchor'] or '':<40} {f['goal'] or '':<14} "
                f"{_number(f['met']) if f['goal'] else ''}"
            )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Change:
    """One figure in two runs."""

    path: str
    unit: str
    old: float | None
    new: float | None
    old_ratio: float | None
    new_ratio: float | None
    old_met: bool | None
    new_met: bool | None

    @property
    def change(self) -> float | None:
        """Relative change of the value (new / old - 1), None when either is missing."""
        if self.old is None or self.new is None or self.old == 0:
            return None
        return self.new / self.old - 1


def compare(
    old: Mapping[str, Mapping[str, Mapping[str, Any]]],
    new: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[Change]:
    """Every figure of either run, old against new (missing on one side: None)."""
    changes: list[Change] = []
    names = [*old] + [s for s in new if s not in old]
    for section in names:
        before, after = old.get(section, {}), new.get(section, {})
        for name in [*before] + [n for n in after if n not in before]:
            a, b = before.get(name, {}), after.get(name, {})
            changes.append(
                Change(
                    f"{section}/{name}",
                    str(b.get("unit") or a.get("unit") or ""),
                    a.get("value"),
                    b.get("value"),
                    a.get("ratio"),
                    b.get("ratio"),
                    a.get("met"),
                    b.get("met"),
                )
            )
    return changes


def format_comparison(changes: Sequence[Change]) -> str:
    """Old vs new, with the relative change and goals that flipped marked."""
    lines = [
        f"  {'figure':<46} {'old':>10} {'new':>10} {'change':>8} {'ratio old':>9} "
        f"{'ratio new':>9}  goal"
    ]
    for c in changes:
        change = "-" if c.change is None else f"{c.change:+.0%}"
        flip = ""
        if c.old_met is True and c.new_met is False:
            flip = "now missed"
        elif c.old_met is False and c.new_met is True:
            flip = "now met"
        lines.append(
            f"  {c.path:<46} {_number(c.old):>10} {_number(c.new):>10} {change:>8} "
            f"{_number(c.old_ratio):>9} {_number(c.new_ratio):>9}  {flip}"
        )
    return "\n".join(lines)
