"""A cell's in-process cache: TTL entries that remember how long they took to compute.

Every lookup feeds a ``HotKeyTracker`` (exponentially decaying counts), which names the
keys to prewarm after an invalidation and the "hot set" whose hit rate the control loop
watches. Expired entries are kept until they are overwritten or invalidated, so a cell in
stampede emergency can serve them stale while one refresh runs.

``missed_keys`` counts distinct keys missed: a key counts once from its first miss until a
value is stored for it again, however many requests miss it meanwhile. Backend computations
divided by its increase is how many times each missed key was computed (a herd's signature:
about one with request coalescing, as many as there were concurrent misses without).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from chaosemergence.defenses.detect import HotKeyTracker

__all__ = ["Cache", "Entry", "Lookup"]

# A key is "hot" when its decayed request count reaches this many requests.
HOT_MIN_RATE = 3.0
HOT_SET_SIZE = 50

Lookup = Literal["hit", "stale", "miss"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached value, when it was stored, when it expires, how long it took to compute."""

    value: Any
    stored_at: float
    expires_at: float
    delta: float


class Cache:
    """Key -> Entry with an expiry; counts hits, misses and stale reads; tracks hot keys."""

    def __init__(
        self,
        ttl: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        half_life_seconds: float = 30.0,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self.tracker = HotKeyTracker(
            capacity=1000, half_life_seconds=half_life_seconds, clock=clock
        )
        # All fields below are only touched from the event loop.
        self._entries: dict[str, Entry] = {}
        self._hot: frozenset[str] = frozenset()
        self.hits = 0
        self.misses = 0
        self.stale = 0
        self.hot_hits = 0  # lookups of hot keys answered fresh (or stale)
        self.hot_misses = 0
        self.missed_keys = 0  # distinct keys missed (once per key until it is stored again)
        self._cold: set[str] = set()  # keys missed since they were last stored

    def lookup(self, key: str, *, allow_stale: bool = False) -> tuple[Entry | None, Lookup]:
        """Return the entry and whether it was a fresh hit, a stale read or a miss."""
        self.tracker.record(key)
        entry = self._entries.get(key)
        hot = key in self._hot
        if entry is not None and entry.expires_at > self._clock():
            self.hits += 1
            self.hot_hits += hot
            return entry, "hit"
        if entry is not None and allow_stale:
            self.stale += 1
            self.hot_hits += hot
            return entry, "stale"
        self.misses += 1
        self.hot_misses += hot
        if key not in self._cold:
            self._cold.add(key)
            self.missed_keys += 1
        return None, "miss"

    def peek(self, key: str) -> Entry | None:
        """The entry held for ``key``, expired or not (a peek: counts nothing)."""
        return self._entries.get(key)

    def is_fresh(self, key: str) -> bool:
        """Whether ``key`` holds an unexpired value (a peek: counts nothing)."""
        entry = self._entries.get(key)
        return entry is not None and entry.expires_at > self._clock()

    def put(self, key: str, value: Any, delta: float = 0.0) -> None:
        """Store ``value``; ``delta`` is how many seconds it took to compute (for XFetch)."""
        now = self._clock()
        self._entries[key] = Entry(value, now, now + self.ttl, max(0.0, delta))
        self._cold.discard(key)

    def invalidate(self) -> int:
        removed = len(self._entries)
        self._entries.clear()
        self._cold.clear()  # every key missed from now on starts a new count
        return removed

    def hottest(self, count: int, min_rate: float = 0.0) -> list[str]:
        """The ``count`` most requested keys lately, hottest first, asked >= ``min_rate`` times.

        ``min_rate`` is a decayed request count: keys asked about once lately (the long tail)
        are left out with ``min_rate`` above 1.
        """
        keys = self.tracker.hottest(count)
        return [k for k in keys if self.tracker.rate(k) >= min_rate] if min_rate else keys

    def refresh_hot_set(self) -> frozenset[str]:
        """Recompute the hot set (called once a second by the control loop)."""
        self._hot = frozenset(
            key
            for key in self.tracker.hottest(HOT_SET_SIZE)
            if self.tracker.rate(key) >= HOT_MIN_RATE
        )
        return self._hot

    @property
    def hot_keys(self) -> frozenset[str]:
        return self._hot

    def reset_heat(self) -> None:
        """Forget which keys are hot."""
        self.tracker.reset()
        self._hot = frozenset()

    def __len__(self) -> int:
        return len(self._entries)
