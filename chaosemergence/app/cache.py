"""A cell's in-process cache with TTL, hit/miss counts and a hot-key tally for prewarming."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Cache"]


class Cache:
    """Key -> value with an expiry; counts hits and misses, remembers the hottest keys."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        # Only touched from the event loop.
        self._entries: dict[str, tuple[Any, float, float]] = {}  # value, stored_at, expires_at
        self._heat: dict[str, float] = {}  # key -> faded request count
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> tuple[Any, float, float] | None:
        """(value, stored_at, expires_at) when fresh, else None; counts the hit or miss."""
        self._heat[key] = self._heat.get(key, 0.0) + 1.0
        entry = self._entries.get(key)
        if entry is None or entry[2] <= self._clock():
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, value: Any) -> None:
        now = self._clock()
        self._entries[key] = (value, now, now + self.ttl)

    def invalidate(self) -> int:
        removed = len(self._entries)
        self._entries.clear()
        return removed

    def hottest(self, count: int) -> list[str]:
        return sorted(self._heat, key=self._heat.__getitem__, reverse=True)[:count]

    def decay(self, factor: float = 0.9) -> None:
        """Fade the heat tally (called once a second) so "hottest" follows current traffic."""
        self._heat = {k: v * factor for k, v in self._heat.items() if v * factor > 0.05}

    def __len__(self) -> int:
        return len(self._entries)
