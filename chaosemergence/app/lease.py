"""A lease on what the tool weakens: defenses switched off, jitter removed (docs/trust.md).

Faults expire by themselves; a switch does not. So every change that weakens the system
takes a lease with a deadline, which whoever runs the experiment renews while it runs
(``chaosemergence.lease.LeaseKeeper`` in the ``chaos`` process). When nobody renews it in
time (the run was killed, its rollback failed or never ran) the gateway puts every defense
back on and the jitter back, by itself. Restoring everything (a reset, every defense
switched on with the jitter on) releases the lease.

Owned by the admin API's event loop (one thread): no lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_LEASE_SECONDS", "Lease", "validate_lease_seconds"]

MAX_LEASE_SECONDS = 3600.0


def validate_lease_seconds(value: Any, default: float) -> float:
    """`lease_seconds` of a request: absent (the default) or a number in [1, 3600]."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"lease_seconds must be a number of seconds, got {value!r}")
    if not 1 <= value <= MAX_LEASE_SECONDS:
        raise ValueError(f"lease_seconds must be in [1, {MAX_LEASE_SECONDS:.0f}], got {value}")
    return float(value)


class Lease:
    """Held while something is weakened; expires ``seconds`` after its last renewal."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: float | None = None  # None: not held
        self.expirations = 0

    @property
    def held(self) -> bool:
        return self._until is not None

    def take(self, seconds: float) -> None:
        """Something was weakened: hold the lease for ``seconds`` from now (renews it)."""
        self._until = self._clock() + seconds

    def renew(self, seconds: float) -> bool:
        """Extend a held lease to ``seconds`` from now; False when nothing is held."""
        if self._until is None:
            return False
        self._until = self._clock() + seconds
        return True

    def release(self) -> None:
        """Nothing is weakened any more."""
        self._until = None

    def expired(self) -> bool:
        """Held and past its deadline (the caller restores, then releases)."""
        return self._until is not None and self._clock() >= self._until

    def view(self) -> dict[str, Any]:
        left = None if self._until is None else max(0.0, self._until - self._clock())
        return {"held": self.held, "expires_in": left, "expirations": self.expirations}
