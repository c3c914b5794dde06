"""Size a load spike from what the system showed, so a trigger has the same margin anywhere.

A fixed user count is a different trigger on every machine: how many requests a Locust user
sends per second depends on how fast the machine answers. `plan_spike` sizes the spike from
two measured rates instead: the capacity of the dependency the spike must overrun (calls per
second its workers can serve, from the system's own configuration) and the rate at which
the steady-state users offered the requests that land on it (from the baseline window the
reference_system control records before the method). Pure arithmetic, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["SpikePlan", "plan_spike"]


@dataclass(frozen=True, slots=True)
class SpikePlan:
    """How many users to add so that every user together offers `multiple` x capacity."""

    multiple: float
    capacity_rps: float  # calls/s the dependency can serve
    baseline_rps: float  # route requests/s the baseline users offered
    baseline_users: int
    per_user_rps: float  # route requests/s one user offered in the baseline
    target_rps: float  # multiple x capacity: what baseline + spike users must offer
    users: int  # users to add on top of the baseline's

    @property
    def total_users(self) -> int:
        return self.baseline_users + self.users

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def plan_spike(
    multiple: float,
    capacity_rps: float,
    baseline_rps: float,
    baseline_users: int,
    max_users: int = 5000,
) -> SpikePlan:
    """The users to add so that, at the baseline's per-user rate, demand is `multiple` x capacity.

    Every user offers what a baseline user offered (`baseline_rps / baseline_users`, same
    think time, same mix), so `ceil(multiple * capacity / per_user)` users in all, of which the
    baseline's are already running. At least one user is added; ValueError when an input is
    not positive, `multiple` is below 1 (that is no overload) or the spike would need more
    than `max_users` users (the baseline offered too little to extrapolate from).
    """
    multiple = _positive("multiple", multiple)
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1 (a spike over capacity), got {multiple}")
    capacity = _positive("capacity_rps", capacity_rps)
    rate = _positive("baseline_rps", baseline_rps)
    if isinstance(baseline_users, bool) or not isinstance(baseline_users, int):
        raise ValueError(f"baseline_users must be an integer > 0, got {baseline_users!r}")
    users = int(_positive("baseline_users", baseline_users))
    per_user = rate / users
    target = multiple * capacity
    needed = math.ceil(target / per_user - 1e-9) - users
    extra = max(1, needed)
    if extra > max_users:
        raise ValueError(
            f"a spike of {multiple:g}x {capacity:g}/s at {per_user:.3f}/s per user needs "
            f"{extra} more users, over the limit of {max_users}"
        )
    return SpikePlan(multiple, capacity, rate, users, per_user, target, extra)
