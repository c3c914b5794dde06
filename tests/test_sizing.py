"""A spike sized from measured rates: enough users for `multiple` x capacity, no fewer."""

from __future__ import annotations

import math

import pytest

from chaosemergence.sizing import plan_spike


def test_users_cover_the_multiple_of_capacity_at_the_measured_per_user_rate() -> None:
    """16 users offering 9/s: 3 x 20/s needs ceil(60 / 0.5625) = 107 users, so 91 more."""
    plan = plan_spike(3, 20.0, 9.0, 16)
    assert plan.per_user_rps == pytest.approx(0.5625)
    assert plan.target_rps == 60.0
    assert plan.users == 91 and plan.total_users == 107
    assert plan.total_users * plan.per_user_rps >= plan.target_rps
    assert (plan.total_users - 1) * plan.per_user_rps < plan.target_rps


@pytest.mark.parametrize(("per_user", "users"), [(1.0, 44), (0.5, 104), (0.25, 224)])
def test_a_slower_machine_gets_more_users_for_the_same_overload(
    per_user: float, users: int
) -> None:
    """Half the rate per user, twice the users: the offered load is what stays fixed."""
    plan = plan_spike(3, 20.0, per_user * 16, 16)
    assert plan.users == users
    assert plan.total_users * per_user >= 60.0


def test_an_exact_fit_needs_no_extra_user_for_rounding() -> None:
    """10 users at 1/s each and a target of 30/s: exactly 20 more, not 21."""
    assert plan_spike(3, 10.0, 10.0, 10).users == 20


def test_a_baseline_already_over_the_target_still_adds_one_user() -> None:
    """A spike always adds load: at least one user, even when the baseline alone suffices."""
    assert plan_spike(1, 5.0, 50.0, 10).users == 1


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.5, 20.0, 9.0, 16), "multiple must be >= 1"),
        ((3, 0.0, 9.0, 16), "capacity_rps"),
        ((3, 20.0, 0.0, 16), "baseline_rps"),
        ((3, 20.0, 9.0, 0), "baseline_users"),
        ((3, 20.0, 9.0, True), "baseline_users"),
        ((3, math.inf, 9.0, 16), "capacity_rps must be finite"),
        ((3, 20.0, 0.01, 16), "over the limit"),
    ],
)
def test_inputs_that_cannot_size_a_spike_are_refused(args: tuple[float, ...], match: str) -> None:
    """No capacity, no baseline traffic, an under-capacity 'spike' or an absurd user count."""
    with pytest.raises(ValueError, match=match):
        plan_spike(*args)  # type: ignore[arg-type]


def test_the_plan_reads_as_plain_numbers() -> None:
    """as_dict gives the journal plain, rounded numbers."""
    assert plan_spike(3, 20.0, 9.1, 16).as_dict() == {
        "multiple": 3.0,
        "capacity_rps": 20.0,
        "baseline_rps": 9.1,
        "baseline_users": 16,
        "per_user_rps": 0.569,
        "target_rps": 60.0,
        "users": 90,
    }
