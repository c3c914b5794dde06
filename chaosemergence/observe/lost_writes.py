"""Acknowledged writes lost, as a number Prometheus can alert on.

The gateway keeps the idempotency key of every payment a cell acknowledged. Every few
seconds it asks each cell which of the keys it has not yet seen committed are missing. A
committed payment cannot disappear (SQLite WAL), so a key found once is never asked again
and each check only carries the new keys. A key missing at two checks in a row is lost: the
test-only write-behind mode commits about 1 s after acknowledging, much less than the
interval between checks, so a write still in flight at one check is found at the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

__all__ = ["CHECK_SECONDS", "LostWriteWatch"]

CHECK_SECONDS = 5.0

# Asks one cell which of `keys` are not in its database; None when it could not answer.
MissingLookup = Callable[[int, list[str]], Awaitable[list[str] | None]]


class LostWriteWatch:
    """Per cell: keys confirmed committed, keys missing at the last check, keys lost."""

    def __init__(self, acknowledged: Mapping[int, set[str]]) -> None:
        self._acknowledged = acknowledged
        # Event-loop only.
        self._confirmed: dict[int, set[str]] = {cell: set() for cell in acknowledged}
        self._suspect: dict[int, set[str]] = {cell: set() for cell in acknowledged}
        self.lost: dict[int, int] = dict.fromkeys(acknowledged, 0)

    async def check(self, missing: MissingLookup) -> dict[int, int]:
        """One round over every cell; returns (and keeps) the lost count per cell."""
        for cell, keys in self._acknowledged.items():
            confirmed = self._confirmed.setdefault(cell, set())
            pending = sorted(keys - confirmed)
            if not pending:
                self._suspect[cell] = set()
                self.lost[cell] = 0
                continue
            answer = await missing(cell, pending)
            if answer is None:  # no answer: keep the last verdict
                continue
            now_missing = set(answer)
            confirmed.update(k for k in pending if k not in now_missing)
            self.lost[cell] = len(now_missing & self._suspect.get(cell, set()))
            self._suspect[cell] = now_missing
        return dict(self.lost)
