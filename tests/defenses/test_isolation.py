"""The seed's isolation score and cascade risk."""

from __future__ import annotations

import pytest

from chaosemergence.defenses.detect import CASCADE_ALERT, cascade_risk, isolation_score


@pytest.mark.parametrize(
    ("cross", "total", "expected"),
    [(0, 100, 1.0), (25, 100, 0.75), (100, 100, 0.0), (300, 100, 0.0), (0, 0, 1.0), (5, 0, 1.0)],
)
def test_isolation_score(cross: float, total: float, expected: float) -> None:
    """1 - min(cross-cell / total, 1); a cell that saw nothing is isolated."""
    assert isolation_score(cross, total) == pytest.approx(expected)


def test_cascade_risk_weights_and_alert() -> None:
    """0.6 x cross-cell dependencies + 0.4 x shared resources, clamped to shares."""
    assert cascade_risk(0.0, 0.0) == 0.0
    assert cascade_risk(1.0, 1.0) == pytest.approx(1.0)
    assert cascade_risk(0.5, 0.0) == pytest.approx(0.3)
    assert cascade_risk(0.0, 0.5) == pytest.approx(0.2)
    assert cascade_risk(2.0, float("nan")) == pytest.approx(0.6)
    assert cascade_risk(0.2, 0.0) > CASCADE_ALERT > cascade_risk(0.1, 0.0)
