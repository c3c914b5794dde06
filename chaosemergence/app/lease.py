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

__all__ = ["Lease"]


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
