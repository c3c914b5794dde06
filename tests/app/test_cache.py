"""The cell's cache: XFetch deltas, stale reads, hot keys and their hit rate (fake clock)."""

from __future__ import annotations

import random

from chaosemergence.app.cache import HOT_MIN_RATE, Cache
from chaosemergence.defenses import ProbabilisticExpiry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_remember_their_compute_time_and_expire() -> None:
    """A fresh entry is a hit; past its TTL it is a miss, or a stale read when allowed."""
    clock = Clock()
    cache = Cache(10.0, clock=clock)
    cache.put("k", {"v": 1}, delta=0.25)
    entry, found = cache.lookup("k")
    assert found == "hit" and entry is not None and entry.delta == 0.25
    assert entry.expires_at == 110.0
    clock.now = 111.0
    assert cache.lookup("k") == (None, "miss")
    stale, found = cache.lookup("k", allow_stale=True)
    assert found == "stale" and stale is not None and stale.value == {"v": 1}
    assert (cache.hits, cache.misses, cache.stale) == (1, 1, 1)


def test_slow_values_are_refreshed_earlier_by_xfetch() -> None:
    """Near expiry, XFetch refreshes a value that took long to compute more often."""
    clock = Clock()
    xfetch = ProbabilisticExpiry(1.0, clock=clock, rng=random.Random(3))
    expiry = clock.now + 0.2
    slow = sum(xfetch.should_refresh(expiry, 0.5) for _ in range(1000))
    fast = sum(xfetch.should_refresh(expiry, 0.01) for _ in range(1000))
    assert slow > 500 and fast == 0
    xfetch.enabled = False  # the naive cache only refreshes once expired
    assert not any(xfetch.should_refresh(expiry, 0.5) for _ in range(100))


def test_hot_keys_are_the_ones_asked_often_lately() -> None:
    """The hot set holds keys asked at least HOT_MIN_RATE times lately; their hits are counted."""
    clock = Clock()
    cache = Cache(60.0, clock=clock)
    for _ in range(int(HOT_MIN_RATE) + 2):
        cache.lookup("hot")
    cache.lookup("once")
    assert cache.refresh_hot_set() == frozenset({"hot"})
    assert cache.hottest(2) == ["hot", "once"]
    cache.put("hot", 1)
    cache.lookup("hot")
    cache.lookup("once")
    assert (cache.hot_hits, cache.hot_misses) == (1, 0)
    cache.invalidate()
    cache.lookup("hot")
    assert cache.hot_misses == 1
    assert not cache.is_fresh("hot")


def test_a_missed_key_counts_once_until_it_is_stored_again() -> None:
    """missed_keys counts distinct keys missed: repeated misses of one cold key count once;
    once stored it is warm, and after an invalidation a miss counts it again."""
    clock = Clock()
    cache = Cache(10.0, clock=clock)
    for _ in range(5):
        cache.lookup("a")
    cache.lookup("b")
    assert (cache.misses, cache.missed_keys) == (6, 2)
    cache.put("a", 1)
    cache.lookup("a")
    assert cache.missed_keys == 2
    clock.now += 11  # expired: a miss again, a new count
    cache.lookup("a")
    assert cache.missed_keys == 3
    cache.invalidate()
    cache.lookup("b")  # still cold since its first miss, but the invalidation starts afresh
    assert cache.missed_keys == 4


def test_hottest_can_leave_the_long_tail_out() -> None:
    """hottest(n, min_rate) keeps only keys asked about at least min_rate times lately."""
    clock = Clock()
    cache = Cache(60.0, clock=clock)
    for _ in range(3):
        cache.lookup("hot")
    cache.lookup("once")
    assert cache.hottest(5) == ["hot", "once"]
    assert cache.hottest(5, min_rate=2.0) == ["hot"]
