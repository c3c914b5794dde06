"""The resilience score of one run: how well its steady-state hypothesis held after the method.

Every probe of the hypothesis, as judged *after* the method, earns credit:

- 0 when it missed its tolerance (or never ran: a run aborted or skipped before the after
  hypothesis proved nothing);
- 0.5 + 0.5 x headroom when it held, where headroom (0..1) says how far the value stayed
  from the tolerance's limit: for a range starting at 0 or below (p99, failure radius: lower
  is better), `(high - value) / (high - low)`; for a range whose top is open or at least ten
  times its bottom (goodput ratio: higher is better), `(value - low) / low`, capped at 1; for
  any other range, the distance to the nearer bound over half the range's width. An exact
  tolerance (`0`, `false`) that held has full headroom: there is no "almost lost a write".

Probes that measure harm users see (`chaosemergence.verdict.HARM_PROBES`: latency, failure
radius, goodput, lost writes, cells down...) weigh 2, other probes 1. The score is the weighted
mean credit x 100: 100 means every probe held with all its room to spare, 50 that every probe
held right at its limit, and below 50 that something users feel broke.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from chaosemergence.verdict import HARM_PROBES

__all__ = ["HARM_WEIGHT", "OTHER_WEIGHT", "ProbeScore", "RunScore", "headroom", "score_run"]

HARM_WEIGHT = 2.0
OTHER_WEIGHT = 1.0
OPEN_TOP_RATIO = 10.0


@dataclass(frozen=True)
class ProbeScore:
    """One hypothesis probe's part of the score."""

    name: str
    func: str
    weight: float
    held: bool
    headroom: float | None  # None when it did not hold or had no measurable value
    credit: float
    value: Any
    tolerance: Any
    why: str


@dataclass(frozen=True)
class RunScore:
    """A run's score (0..100, None when the hypothesis has no probe) and its parts."""

    score: float | None
    probes: list[ProbeScore]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def headroom(value: Any, tolerance: Any) -> float | None:
    """How far `value` stayed from the limit of `tolerance`, 0..1 (None: not a range)."""
    if not isinstance(tolerance, dict) or tolerance.get("type") != "range":
        return None
    bounds = tolerance.get("range")
    x = _number(value)
    if x is None or not isinstance(bounds, list | tuple) or len(bounds) != 2:
        return None
    low, high = _number(bounds[0]), _number(bounds[1])
    if low is None or high is None or high <= low:
        return None
    if low <= 0:
        room = (high - x) / (high - low)
    elif high >= OPEN_TOP_RATIO * low:
        room = (x - low) / low
    else:
        room = min(x - low, high - x) / ((high - low) / 2)
    return max(0.0, min(1.0, room))


def _func(activity: dict[str, Any]) -> str:
    provider = activity.get("provider")
    return str(provider.get("func", "")) if isinstance(provider, dict) else ""


def score_run(journal: dict[str, Any]) -> RunScore:
    """Score one journal's after-method hypothesis (see the module's docstring)."""
    hypothesis = (journal.get("experiment") or {}).get("steady-state-hypothesis") or {}
    declared = [p for p in hypothesis.get("probes") or [] if isinstance(p, dict)]
    after = ((journal.get("steady_states") or {}).get("after") or {}).get("probes") or []
    ran = {str((p.get("activity") or {}).get("name")): p for p in after if isinstance(p, dict)}
    parts: list[ProbeScore] = []
    for probe in declared:
        name = str(probe.get("name"))
        func = _func(probe)
        weight = HARM_WEIGHT if func in HARM_PROBES else OTHER_WEIGHT
        tolerance = probe.get("tolerance")
        result = ran.get(name)
        if result is None:
            parts.append(ProbeScore(name, func, weight, False, None, 0.0, None, tolerance,
                                    "not judged after the method"))  # fmt: skip
            continue
        value = result.get("output")
        if result.get("tolerance_met") is not True:
            why = "missed its tolerance" if result.get("status") == "succeeded" else "failed"
            parts.append(ProbeScore(name, func, weight, False, None, 0.0, value, tolerance, why))
            continue
        room = headroom(value, tolerance)
        credit = 0.5 + 0.5 * (1.0 if room is None else room)
        why = "held" if room is None else f"held with {room:.0%} of the range to spare"
        parts.append(ProbeScore(name, func, weight, True, room, credit, value, tolerance, why))
    total = sum(p.weight for p in parts)
    if not total:
        return RunScore(None, parts)
    return RunScore(round(100.0 * sum(p.weight * p.credit for p in parts) / total, 1), parts)
