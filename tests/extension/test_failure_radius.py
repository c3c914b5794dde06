"""What counts as a failure users see: errors anywhere, sheds on critical and core paths."""

from __future__ import annotations

from typing import Any

from chaosemergence.measure import percent_degraded, percent_failed


def _requests(route: str, outcome: str, value: float) -> dict[str, Any]:
    return {
        "name": "emergence_requests_total",
        "labels": {"route": route, "cell": "0", "outcome": outcome},
        "value": value,
    }


SAMPLES = [
    _requests("payments", "success", 40),
    _requests("payments", "shed", 5),
    _requests("profile", "success", 30),
    _requests("profile", "shed", 5),
    _requests("profile", "failure", 10),
    _requests("recommendations", "shed", 10),
]


def test_sheds_on_payments_and_profiles_count_as_failures() -> None:
    """5 + 5 shed and 10 errors out of 100 requests: 20% failed."""
    assert percent_failed(SAMPLES) == 20.0


def test_shed_optional_features_are_degraded_not_failed() -> None:
    """The 10 shed recommendations are reported as degraded, and are not in the radius."""
    assert percent_degraded(SAMPLES) == 10.0
    only_optional = [_requests("recommendations", "shed", 10), _requests("profile", "success", 90)]
    assert percent_failed(only_optional) == 0.0


def test_failure_radius_per_route_counts_that_route_only() -> None:
    """Restricted to payments: 5 sheds of 45 requests."""
    assert percent_failed(SAMPLES, route="payments") == round(100 * 5 / 45, 3)
