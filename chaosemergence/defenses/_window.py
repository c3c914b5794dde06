"""Count events in fixed-width time buckets summed over a sliding window."""

from __future__ import annotations

__all__ = ["SlidingCounts"]


class SlidingCounts:
    """Integer counters over the last ``window`` seconds, kept in ``buckets`` slots.

    Recording and reading are O(1) amortised: expired buckets are subtracted from the
    running totals as time advances. Not thread-safe; callers use it from one event loop
    and never across an ``await``.
    """

    __slots__ = ("_buckets", "_fields", "_head", "_size", "_totals", "_width", "window")

    def __init__(self, window: float, fields: int, buckets: int = 10) -> None:
        if window <= 0:
            msg = f"window must be positive, got {window!r}"
            raise ValueError(msg)
        if buckets < 1 or fields < 1:
            msg = f"buckets and fields must be >= 1, got {buckets!r} and {fields!r}"
            raise ValueError(msg)
        self.window = window
        self._size = buckets
        self._width = window / buckets
        self._fields = fields
        self._buckets = [[0] * fields for _ in range(buckets)]
        self._totals = [0] * fields
        # Absolute index (time // width) of the newest bucket, None before the first event.
        self._head: int | None = None

    def _advance(self, now: float) -> int:
        idx = int(now // self._width)
        head = self._head
        if head is None:
            self._head = idx
            return idx
        if idx > head:
            steps = min(idx - head, self._size)
            totals = self._totals
            for i in range(head + 1, head + steps + 1):
                bucket = self._buckets[i % self._size]
                for f in range(self._fields):
                    totals[f] -= bucket[f]
                    bucket[f] = 0
            self._head = idx
            return idx
        # A clock that went backwards counts into the newest bucket.
        return head

    def add(self, now: float, field: int, amount: int = 1) -> None:
        """Add ``amount`` to counter ``field`` at time ``now``."""
        head = int(now // self._width)
        if head != self._head:
            head = self._advance(now)
        self._buckets[head % self._size][field] += amount
        self._totals[field] += amount

    def add_many(self, now: float, amounts: tuple[int, ...]) -> None:
        """Add one amount per field at time ``now``."""
        head = self._advance(now)
        bucket = self._buckets[head % self._size]
        totals = self._totals
        for f, amount in enumerate(amounts):
            bucket[f] += amount
            totals[f] += amount

    def total(self, now: float, field: int) -> int:
        """Return counter ``field`` summed over the window ending at ``now``."""
        self._advance(now)
        return self._totals[field]

    def live_totals(self, now: float) -> list[int]:
        """Return the running totals list itself (no copy; callers must not mutate it)."""
        self._advance(now)
        return self._totals

    def totals(self, now: float) -> tuple[int, ...]:
        """Return every counter summed over the window ending at ``now``."""
        self._advance(now)
        return tuple(self._totals)

    def clear(self) -> None:
        """Forget every recorded event."""
        for bucket in self._buckets:
            for f in range(self._fields):
                bucket[f] = 0
        self._totals = [0] * self._fields
        self._head = None
