"""The lease on weakened defenses (chaosemergence/app/lease.py), on an injected clock."""

from __future__ import annotations

import pytest

from chaosemergence.app.lease import Lease
from chaosemergence.contract import check_lease_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_expires_unless_renewed() -> None:
    """Taken for 10 s: renewed at 8 s it holds past 10 s, then expires 10 s after that."""
    clock = Clock()
    lease = Lease(clock=clock)
    lease.take(10)
    clock.now += 8
    assert not lease.expired() and lease.renew(10)
    clock.now += 9
    assert not lease.expired()
    clock.now += 1
    assert lease.expired() and lease.held


def test_a_released_lease_is_not_renewed_and_never_expires() -> None:
    """Nothing weakened: renewals are refused (so keepers stop) and nothing expires."""
    clock = Clock()
    lease = Lease(clock=clock)
    assert lease.renew(10) is False
    lease.take(5)
    lease.release()
    clock.now += 60
    assert not lease.expired() and lease.view()["held"] is False


@pytest.mark.parametrize("bad", [0, 0.5, 3601, "30", True, None])
def test_lease_seconds_out_of_range_names_the_field(bad: object) -> None:
    """Absent means the default; anything else must be a number in [1, 3600]."""
    if bad is None:
        assert check_lease_seconds(None, 30.0) == 30.0
        return
    with pytest.raises(ValueError, match="lease_seconds"):
        check_lease_seconds(bad, 30.0)
