"""Shed load by priority when the system's complexity budget runs out."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._events import EventLog
from ._graph import CallGraph, interaction_complexity
from ._recorder import NULL_RECORDER, MetricsRecorder
from ._types import Clock
from ._window import SlidingCounts

__all__ = [
    "PRIORITIES",
    "ComplexityBudget",
    "ComplexityInputs",
    "ComplexityWeights",
    "LoadShedder",
    "ShedDecision",
    "ShedLevel",
    "bend",
    "level_names",
]

DEFENSE = "load_shedding"

#: Request priorities, most important first. ``critical`` is never shed.
PRIORITIES: tuple[str, ...] = ("critical", "high", "medium", "low")

_INDEX: dict[str, int] = {p: i for i, p in enumerate(PRIORITIES)}
_LOW = _INDEX["low"]

#: Features the seed always preserves.
CRITICAL_FEATURES: frozenset[str] = frozenset({"payments", "payment", "core", "auth"})


@dataclass(frozen=True, slots=True)
class ComplexityWeights:
    """The seed's weights of the five complexity sources (they sum to 1)."""

    request_rate: float = 0.2
    unique_users: float = 0.15
    service_interactions: float = 0.25
    data_volume: float = 0.1
    retry_amplification: float = 0.3


@dataclass(frozen=True, slots=True)
class ComplexityInputs:
    """Raw measurements feeding the complexity score.

    ``retry_amplification`` is dependency attempts per user request (1.0 = no retries).
    ``call_graph`` maps each service to the services it calls.
    """

    request_rate: float = 0.0
    unique_users: float = 0.0
    data_volume: float = 0.0
    retry_amplification: float = 1.0
    call_graph: CallGraph = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShedLevel:
    """A shedding level: which share of load to shed, from which priorities."""

    name: str
    shed_fraction: float
    priorities: frozenset[str]
    degraded: bool = False
    emergency: bool = False


GREEN = ShedLevel("green", 0.0, frozenset())
YELLOW = ShedLevel("yellow", 0.10, frozenset({"low"}))
RED = ShedLevel("red", 0.30, frozenset({"low", "medium"}), degraded=True)
EMERGENCY = ShedLevel("emergency", 0.70, frozenset({"low", "medium", "high"}), True, True)


def _clamp(x: float) -> float:
    return 0.0 if x != x or x < 0.0 else min(x, 1.0)


class ComplexityBudget:
    """The seed's complexity score and the shedding level it calls for.

    Each source is normalized to [0, 1] against a capacity (retry amplification
    against the seed's 3x), weighted 0.2 / 0.15 / 0.25 / 0.1 / 0.3, and the sum is
    bent above 0.7 so it climbs faster near the phase transition. The seed writes that
    bend as ``0.7 + (c - 0.7)**2``, which would *flatten* the score and cap it at
    0.79, leaving red unreachable; we use ``0.7 + 0.3 * sqrt((c - 0.7) / 0.3)``,
    continuous, steeper near 0.7 and reaching 1.0 at 1.0. Levels: below 0.5 green
    (shed nothing), below 0.7 yellow (10% from low priority), below 0.85 red (30% from
    low and medium, degraded mode), else emergency (70%, essential features only).
    """

    def __init__(
        self,
        *,
        request_capacity: float = 1000.0,
        user_capacity: float = 10_000.0,
        data_capacity: float = 1_000_000.0,
        max_amplification: float = 3.0,
        weights: ComplexityWeights | None = None,
        thresholds: tuple[float, float, float] = (0.5, 0.7, 0.85),
    ) -> None:
        if min(request_capacity, user_capacity, data_capacity) <= 0 or max_amplification <= 1:
            msg = "capacities must be > 0 and max_amplification > 1"
            raise ValueError(msg)
        self.request_capacity = request_capacity
        self.user_capacity = user_capacity
        self.data_capacity = data_capacity
        self.max_amplification = max_amplification
        self.weights = weights if weights is not None else ComplexityWeights()
        self.thresholds = thresholds
        self._graph_cache: tuple[object, float] | None = None  # guarded by the caller's loop

    def _interactions(self, graph: CallGraph) -> float:
        key = tuple(sorted((k, tuple(sorted(v))) for k, v in graph.items()))
        if self._graph_cache is not None and self._graph_cache[0] == key:
            return self._graph_cache[1]
        value = interaction_complexity(graph)
        self._graph_cache = (key, value)
        return value

    def components(self, inputs: ComplexityInputs) -> dict[str, float]:
        """Return each source normalized to [0, 1]."""
        amplification = (inputs.retry_amplification - 1.0) / (self.max_amplification - 1.0)
        return {
            "request_rate": _clamp(inputs.request_rate / self.request_capacity),
            "unique_users": _clamp(inputs.unique_users / self.user_capacity),
            "service_interactions": _clamp(self._interactions(inputs.call_graph)),
            "data_volume": _clamp(inputs.data_volume / self.data_capacity),
            "retry_amplification": _clamp(amplification),
        }

    def score(self, inputs: ComplexityInputs) -> float:
        """Return the complexity score in [0, 1]."""
        parts = self.components(inputs)
        w = self.weights
        linear = (
            parts["request_rate"] * w.request_rate
            + parts["unique_users"] * w.unique_users
            + parts["service_interactions"] * w.service_interactions
            + parts["data_volume"] * w.data_volume
            + parts["retry_amplification"] * w.retry_amplification
        )
        return bend(linear)

    def level(self, score: float) -> ShedLevel:
        """Return the shedding level for ``score``."""
        green, yellow, red = self.thresholds
        if score < green:
            return GREEN
        if score < yellow:
            return YELLOW
        if score < red:
            return RED
        return EMERGENCY


def bend(linear: float) -> float:
    """Steepen a linear score above 0.7 (see ``ComplexityBudget``), capped at 1."""
    c = _clamp(linear)
    if c > 0.7:
        c = 0.7 + 0.3 * ((c - 0.7) / 0.3) ** 0.5
    return min(c, 1.0)


@dataclass(frozen=True, slots=True)
class ShedDecision:
    """Whether to admit one request, and under which level."""

    admit: bool
    level: str
    probability: float
    degraded: bool
    reason: str


class LoadShedder:
    """Admit or shed each request by priority and feature, at the current shedding level.

    The level's share is taken from the sheddable priorities only: with 10% to shed and
    40% of recent traffic low priority, each low-priority request is shed with
    probability 0.25. Preserved features (payments, core, auth) and ``critical``
    requests are never shed. ``emergency_shed(fraction)`` sets a floor (the control
    loop's "shed 30% now"). With ``enabled=False`` everything is admitted.
    """

    def __init__(
        self,
        budget: ComplexityBudget | None = None,
        *,
        name: str = DEFENSE,
        preserve: frozenset[str] = CRITICAL_FEATURES,
        window_seconds: float = 10.0,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        events: EventLog | None = None,
        enabled: bool = True,
        recorder: MetricsRecorder = NULL_RECORDER,
    ) -> None:
        self.name = name
        self._recorder = recorder
        self.budget = budget if budget is not None else ComplexityBudget()
        self.preserve = preserve
        self.enabled = enabled
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._events = events
        # All fields below are guarded by the event loop (sync code only).
        # Recent traffic per priority (index in PRIORITIES), preserved features excluded.
        self._mix = SlidingCounts(window_seconds, len(PRIORITIES), 10)
        self._base = GREEN  # the level the complexity score calls for
        self._level = GREEN  # the effective level (base raised by any override)
        self._sheddable: tuple[int, ...] = ()  # PRIORITIES indices the level sheds
        self._score = 0.0
        self._override = 0.0
        self._override_reason = ""
        self._active = False
        self.admitted = 0
        self.shed = 0

    @property
    def level(self) -> ShedLevel:
        """The effective shedding level (an override raises it to at least its fraction)."""
        return self._level

    @property
    def score(self) -> float:
        """The last complexity score given to ``update``."""
        return self._score

    def _refresh(self, reason: str) -> None:
        level = self._base
        if self._override > level.shed_fraction:
            wide = self._override > RED.shed_fraction
            priorities = EMERGENCY.priorities if wide else RED.priorities
            level = ShedLevel("override", self._override, priorities, degraded=True)
        self._level = level
        self._sheddable = tuple(i for i, p in enumerate(PRIORITIES) if p in level.priorities)
        active = level.shed_fraction > 0.0
        if active != self._active:
            self._active = active
            if self._events is not None:
                if active:
                    self._events.record(
                        self.name,
                        "activated",
                        reason,
                        level=level.name,
                        fraction=level.shed_fraction,
                    )
                else:
                    self._events.record(self.name, "deactivated", reason, level=level.name)

    def update(self, score: float, reason: str = "") -> ShedLevel:
        """Set the complexity score and switch to the level it calls for."""
        self._score = score
        self._base = self.budget.level(score)
        self._refresh(reason or f"complexity score {score:.2f}")
        return self._level

    def update_from(self, inputs: ComplexityInputs) -> ShedLevel:
        """Score ``inputs`` with the budget and switch level."""
        return self.update(self.budget.score(inputs))

    def emergency_shed(self, fraction: float, reason: str = "emergency shed") -> None:
        """Shed at least ``fraction`` of load until ``clear_override``."""
        self._override = _clamp(fraction)
        self._override_reason = reason
        self._refresh(reason)

    def clear_override(self, reason: str = "override cleared") -> None:
        """Go back to the level the complexity score calls for."""
        self._override = 0.0
        self._override_reason = ""
        self._refresh(reason)

    def _probability(self, now: float) -> float:
        level = self._level
        counts = self._mix.live_totals(now)
        total = counts[0] + counts[1] + counts[2] + counts[3]
        sheddable = 0
        for i in self._sheddable:
            sheddable += counts[i]
        if total == 0 or sheddable == 0:
            return level.shed_fraction
        return min(1.0, level.shed_fraction * total / sheddable)

    def probability(self, priority: str) -> float:
        """Return the probability that a non-preserved request of ``priority`` is shed."""
        level = self._level
        if level.shed_fraction <= 0.0 or priority not in level.priorities:
            return 0.0
        return self._probability(self._clock())

    def admit(self, priority: str = "medium", feature: str = "") -> bool:
        """Decide one request: True to serve it, False to shed it."""
        if not self.enabled:
            return True
        if priority == "critical" or feature in self.preserve:
            self.admitted += 1
            return True
        index = _INDEX.get(priority)
        if index is None:
            index, priority = _LOW, "low"
        now = self._clock()
        self._mix.add(now, index)
        level = self._level
        if level.shed_fraction <= 0.0 or priority not in level.priorities:
            self.admitted += 1
            return True
        if self._rng.random() < self._probability(now):
            self.shed += 1
            self._recorder.increment("shed_requests", shedder=self.name, priority=priority)
            return False
        self.admitted += 1
        return True

    def decide(self, priority: str = "medium", feature: str = "") -> ShedDecision:
        """Like ``admit`` but explain the decision."""
        admitted = self.admit(priority, feature)
        level = self.level
        if not self.enabled:
            why = "shedding disabled"
        elif feature in self.preserve or priority == "critical":
            why = f"{feature or priority} is preserved"
        elif admitted:
            why = f"admitted at level {level.name}"
        else:
            why = f"shed {priority} priority at level {level.name}"
        return ShedDecision(admitted, level.name, self.probability(priority), level.degraded, why)

    def reset(self) -> None:
        """Return to green, clear the override and the traffic mix."""
        self._base = GREEN
        self._score = 0.0
        self._mix.clear()
        self.admitted = self.shed = 0
        self.clear_override("reset")

    def snapshot(self) -> dict[str, object]:
        """Return the level, score and decisions as JSON-able data."""
        level = self.level
        return {
            "name": self.name,
            "enabled": self.enabled,
            "score": self._score,
            "level": level.name,
            "shed_fraction": level.shed_fraction,
            "priorities": sorted(level.priorities),
            "degraded": level.degraded,
            "emergency": level.emergency,
            "override": self._override,
            "override_reason": self._override_reason,
            "admitted": self.admitted,
            "shed": self.shed,
        }


def level_names() -> Mapping[str, float]:
    """Return each level's name and shed fraction (for documentation and dashboards)."""
    return {lvl.name: lvl.shed_fraction for lvl in (GREEN, YELLOW, RED, EMERGENCY)}
