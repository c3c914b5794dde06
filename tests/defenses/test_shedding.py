"""Tests for the complexity budget and priority-aware load shedding."""

from __future__ import annotations

import random

import pytest

from chaosemergence.defenses import EventLog, LoadShedder
from chaosemergence.defenses._shedding import bend
from chaosemergence.defenses.detect import ComplexityBudget, ComplexityInputs

from .conftest import FakeClock

FULL_MESH = {"a": ["b", "c", "d"], "b": ["c", "d"], "c": ["d"]}


def test_weights_of_the_five_sources() -> None:
    """Each source contributes its seed weight: 0.2, 0.15, 0.25, 0.1, 0.3."""
    budget = ComplexityBudget(request_capacity=100, user_capacity=100, data_capacity=100)
    assert budget.score(ComplexityInputs(request_rate=100)) == pytest.approx(0.2)
    assert budget.score(ComplexityInputs(unique_users=100)) == pytest.approx(0.15)
    assert budget.score(ComplexityInputs(data_volume=100)) == pytest.approx(0.1)
    assert budget.score(ComplexityInputs(retry_amplification=3.0)) == pytest.approx(0.3)
    # A full mesh has density 1 and clustering 1, betweenness 0: interaction score 0.7.
    assert budget.score(ComplexityInputs(call_graph=FULL_MESH)) == pytest.approx(0.25 * 0.7)


def test_score_bends_upward_above_point_seven() -> None:
    """Above 0.7 the score climbs faster than linear and reaches 1.0 at 1.0."""
    assert bend(0.5) == 0.5
    assert bend(0.7) == pytest.approx(0.7)
    assert bend(0.75) > 0.75
    assert bend(1.0) == pytest.approx(1.0)
    assert bend(3.0) == 1.0


@pytest.mark.parametrize(
    ("score", "level", "fraction"),
    [(0.3, "green", 0.0), (0.6, "yellow", 0.1), (0.8, "red", 0.3), (0.9, "emergency", 0.7)],
)
def test_levels_at_seed_thresholds(score: float, level: str, fraction: float) -> None:
    """Green / yellow / red at 0.5 / 0.7 / 0.85 shed 0 / 10 / 30 / 70%."""
    shed = ComplexityBudget().level(score)
    assert (shed.name, shed.shed_fraction) == (level, fraction)


def shed_share(shedder: LoadShedder, priority: str, feature: str = "", n: int = 4000) -> float:
    return sum(not shedder.admit(priority, feature) for _ in range(n)) / n


def test_yellow_sheds_only_low_priority(clock: FakeClock) -> None:
    """At yellow, low-priority traffic is shed and medium is untouched."""
    shedder = LoadShedder(clock=clock, rng=random.Random(1))
    shedder.update(0.6)
    assert shed_share(shedder, "medium") == 0.0
    assert shed_share(shedder, "low") > 0.05


def test_share_is_taken_from_sheddable_traffic(clock: FakeClock) -> None:
    """At red, 30% of all traffic is shed, drawn from low and medium priority."""
    shedder = LoadShedder(clock=clock, rng=random.Random(2))
    shedder.update(0.8)
    rng = random.Random(3)
    mix = ["high"] * 40 + ["medium"] * 30 + ["low"] * 30
    total = 20_000
    shed = sum(not shedder.admit(rng.choice(mix)) for _ in range(total))
    assert shed / total == pytest.approx(0.3, abs=0.03)


def test_critical_features_are_preserved(clock: FakeClock) -> None:
    """Payments, core, auth and critical priority are never shed, even in emergency."""
    shedder = LoadShedder(clock=clock, rng=random.Random(4))
    shedder.update(0.95)
    for feature in ("payments", "core", "auth"):
        assert shed_share(shedder, "low", feature, 500) == 0.0
    assert shed_share(shedder, "critical", "", 500) == 0.0
    assert shed_share(shedder, "high", "search", 2000) > 0.6


def test_modes_and_override(clock: FakeClock, events: EventLog) -> None:
    """Red is degraded mode, emergency shed forces 30%, and clearing it records deactivation."""
    shedder = LoadShedder(clock=clock, rng=random.Random(5), events=events)
    assert shedder.decide("low").admit
    shedder.emergency_shed(0.3, "phase defense")
    decision = shedder.decide("low")
    assert decision.degraded and decision.level == "override"
    shedder.clear_override()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]
    assert events.all()[0].defense == "load_shedding"
    shedder.update(0.8)
    assert shedder.snapshot()["degraded"] is True
    shedder.update(0.9)
    assert shedder.snapshot()["emergency"] is True


def test_disabled_shedder_admits_everything(clock: FakeClock) -> None:
    """With enabled=False nothing is shed, whatever the score."""
    shedder = LoadShedder(clock=clock, rng=random.Random(6), enabled=False)
    shedder.update(0.99)
    assert shed_share(shedder, "low", "", 500) == 0.0
    shedder.reset()
    assert shedder.level.name == "green"
