"""One cell's profiles: the cache in front of the database, and every defense of its misses.

A profile is served from the cache (XFetch refreshes a hot key early, in the background);
a miss is computed by ``settings.profile_queries`` database calls and a read, coalesced
with concurrent misses of the same key (single-flight), after the seed's precompute jitter
while the cells correlate. When the database path fails, an expired entry still cached is
served stale (the database breaker's fallback). After an invalidation (or a reset, a
stampede emergency, a metastable recovery) the hottest keys are prewarmed a few at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from chaosemergence.app.cache import Cache
from chaosemergence.app.dependency import DependencyError
from chaosemergence.app.dependency_clients import DependencyClients
from chaosemergence.app.reply import Reply
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.storage import CellStore
from chaosemergence.defenses import DefenseError, EventLog, ProbabilisticExpiry, SingleFlight

__all__ = ["PREWARM_CONCURRENCY", "PREWARM_KEYS", "PREWARM_MIN_RATE", "ProfileCache"]

# Prewarming after an invalidation: at most PREWARM_KEYS of the hottest keys, and only keys
# asked about at least PREWARM_MIN_RATE times lately (a decayed count: the long tail asked
# once is not worth a database call), recomputed PREWARM_CONCURRENCY at a time, hottest
# first. Prewarming goes through the same capacity-limited database as users' misses: all at
# once, it would be a herd of its own.
PREWARM_KEYS = 20
PREWARM_MIN_RATE = 2.0
PREWARM_CONCURRENCY = 2
# Coalescing and early refreshes happen per request: one event per burst, not per request.
NOTE_EVERY_SECONDS = 5.0
# The seed's coalescer: when the cells' load correlates above 0.5, a computation starts after
# a random 0-100 ms, so synchronized misses do not reach the database in the same instant.
PRECOMPUTE_JITTER_CORRELATION = 0.5
PRECOMPUTE_JITTER_SECONDS = 0.1


class ProfileCache:
    """The profile route's cache side: cache, coalescer, XFetch, prewarming, their counters.

    ``enabled`` is the cell's defense switches (read here); ``emergency()`` whether the
    control loop's stampede emergency is on, ``correlation()`` the gateway's fresh
    correlation; ``spawn`` runs background work the cell cancels at stop.
    """

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        store: CellStore,
        clients: DependencyClients,
        enabled: dict[str, bool],
        *,
        emergency: Callable[[], bool],
        correlation: Callable[[], float],
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        rng: random.Random,
        events: EventLog,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._index = index
        self._settings = settings
        self._store = store
        self._clients = clients
        self._enabled = enabled
        self._emergency = emergency
        self._correlation = correlation
        self._spawn = spawn
        self._rng = rng
        self._events = events
        self._clock = clock
        self._sleep = sleep
        self.cache = Cache(settings.cache_ttl_seconds, clock=clock)
        self.coalescer = SingleFlight("request_coalescing")
        # A waiter that gave up before the computation could have failed would turn a slow
        # refill into an error: wait as long as every database call of one computation may
        # take, retries included.
        database = settings.dependencies.get("database")
        # How long a caller waits for a computation it shares: the configured wait, and at
        # least as long as one computation may take.
        self.coalesce_timeout = max(
            settings.coalesce_timeout_seconds,
            0.0
            if database is None
            else settings.profile_queries
            * settings.retry_attempts
            * database.call_timeout_ms
            / 1000,
        )
        self.xfetch = ProbabilisticExpiry(
            settings.xfetch_beta, name="early_expiration", clock=clock, rng=rng
        )
        # Counters read by the metrics collector (event loop only).
        self.computations = 0
        self.prewarm_computations = 0
        self.early_refreshes = 0
        self.coalesced = 0
        self.coalescing_waiters = 0
        self.stale_fallbacks = 0  # profiles served stale because the database path failed
        self.precompute_jitter_delays = 0
        self.precompute_jitter_seconds = 0.0
        self._noted: dict[str, float] = {}
        self._refreshing: set[str] = set()
        # The last background prewarm (start_prewarming), for whoever must wait for it.
        self.prewarming: asyncio.Task[Any] | None = None

    # ----------------------------------------------------------------- serving
    async def serve(self, user_id: str) -> Reply:
        """The profile route's work: from the cache, else one (coalesced) computation."""
        key = f"profile:{user_id}"
        emergency = self._emergency()
        entry, found = self.cache.lookup(key, allow_stale=emergency)
        if entry is not None:
            if found == "stale":
                self._refresh_in_background(key, user_id)
            elif self.xfetch.enabled and self.xfetch.should_refresh(entry.expires_at, entry.delta):
                self.early_refreshes += 1
                self._note("early_expiration", "refreshing a hot key before it expires (XFetch)")
                self._refresh_in_background(key, user_id)
            return Reply(200, {**entry.value, "cell": self._index, "cache": found})
        try:
            profile = await self._compute_miss(key, user_id, emergency)
        except (DependencyError, DefenseError, TimeoutError) as error:
            stale = self._stale_fallback(key)
            if stale is not None:
                return stale
            return Reply(503, {"error": f"profile unavailable: {error}", "cell": self._index}, 1)
        return Reply(200, {**profile, "cell": self._index, "cache": "miss"})

    async def _compute_miss(self, key: str, user_id: str, emergency: bool) -> dict[str, str]:
        """A user's miss: shared with concurrent misses of ``key`` while coalescing is on (or
        the stampede emergency is), else computed on its own."""

        async def compute() -> dict[str, str]:
            self.computations += 1  # a computation a user's miss triggered
            return await self._load(user_id)

        if not (self._enabled["request_coalescing"] or emergency):
            return await compute()
        if self.coalescer.waiters(key) > 0:
            self.coalesced += 1
            self._note("request_coalescing", "concurrent misses shared one computation")
        self.coalescing_waiters += 1
        try:
            return await self.coalescer.do(key, compute, timeout=self.coalesce_timeout)
        finally:
            self.coalescing_waiters -= 1

    def _stale_fallback(self, key: str) -> Reply | None:
        """The database breaker's fallback: the expired value still cached, if any.

        Only while ``circuit_breaker`` is on (off, a failed computation is an error, as in a
        naive service). After an invalidation nothing is left to serve.
        """
        database = self._clients.breakers.get("database")
        if database is None or not database.enabled:
            return None
        entry = self.cache.peek(key)
        if entry is None:
            return None
        self.stale_fallbacks += 1
        self._note("stale_fallback", "database path failing: served expired profiles stale")
        return Reply(200, {**entry.value, "cell": self._index, "cache": "stale"})

    async def _load(self, user_id: str) -> dict[str, str]:
        """One backend computation: the database round trips, the read, then the cache fill.

        A profile takes ``settings.profile_queries`` database calls, one after the other:
        each waits in the database's queue behind whatever arrived meanwhile.
        """
        await self._precompute_jitter()
        started = self._clock()
        for _ in range(self._settings.profile_queries):
            await self._clients.call("database", None)
        profile = await self._store.read_profile(user_id)
        # The time it took is XFetch's delta: slow values are refreshed earlier.
        self.cache.put(f"profile:{user_id}", profile, self._clock() - started)
        return profile

    async def _precompute_jitter(self) -> None:
        """The seed's coalescer jitter: 0-100 ms before a computation while correlation > 0.5."""
        if not self._enabled["precompute_jitter"]:
            return
        correlation = self._correlation()
        if correlation <= PRECOMPUTE_JITTER_CORRELATION:
            return
        delay = self._rng.uniform(0.0, PRECOMPUTE_JITTER_SECONDS)
        self.precompute_jitter_delays += 1
        self.precompute_jitter_seconds += delay
        self._note(
            "precompute_jitter",
            f"correlation {correlation:.2f} > {PRECOMPUTE_JITTER_CORRELATION}: computations "
            f"start after 0-{PRECOMPUTE_JITTER_SECONDS * 1000:.0f} ms of jitter",
        )
        await self._sleep(delay)

    def _refresh_in_background(self, key: str, user_id: str) -> None:
        """Recompute ``key`` once (coalesced) while callers keep getting the cached value."""
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        async def refresh() -> None:
            try:
                with contextlib.suppress(DependencyError, DefenseError, TimeoutError):
                    await self.coalescer.do(
                        key, lambda: self._load(user_id), timeout=self.coalesce_timeout
                    )
            finally:
                self._refreshing.discard(key)

        self._spawn(refresh())

    def _note(self, defense: str, reason: str) -> None:
        """Record a per-request defense once per burst (every NOTE_EVERY_SECONDS at most)."""
        now = self._clock()
        if now - self._noted.get(defense, -math.inf) > NOTE_EVERY_SECONDS:
            self._events.record(defense, "activated", reason)
        self._noted[defense] = now

    # ----------------------------------------------------------------- prewarming
    async def _prewarm(self, key: str) -> None:
        """Recompute ``key`` unless it is fresh again (a user's miss may have filled it)."""
        if self.cache.is_fresh(key):
            return
        user_id = key.split(":", 1)[1]

        async def compute() -> dict[str, str]:
            self.prewarm_computations += 1
            return await self._load(user_id)

        # Through the coalescer: users who miss meanwhile wait for this computation, and a
        # computation a user's miss already started is joined rather than repeated.
        if self._enabled["request_coalescing"]:
            await self.coalescer.do(key, compute, timeout=self.coalesce_timeout)
        else:
            await compute()

    async def prewarm(self, keys: Iterable[str], reason: str) -> int:
        """Recompute ``keys`` (when cache prewarming is on), PREWARM_CONCURRENCY at a time.

        Returns how many are warm afterwards (recomputed, or found fresh again).
        """
        chosen = list(keys)
        if not self._enabled["cache_prewarming"] or not chosen:
            return 0
        self._events.record(
            "cache_prewarming", "activated", f"{reason}: prewarming {len(chosen)} hot keys"
        )
        gate = asyncio.Semaphore(PREWARM_CONCURRENCY)

        async def one(key: str) -> None:
            async with gate:
                await self._prewarm(key)

        results = await asyncio.gather(*(one(k) for k in chosen), return_exceptions=True)
        return sum(1 for r in results if not isinstance(r, BaseException))

    def prewarm_candidates(self) -> list[str]:
        """The keys worth prewarming: the hottest ones, hottest first (PREWARM_* above)."""
        return self.cache.hottest(PREWARM_KEYS, PREWARM_MIN_RATE)

    async def prewarm_hottest(self, reason: str) -> int:
        """Prewarm the hottest keys that are not cached (or no longer fresh)."""
        missing = [k for k in self.prewarm_candidates() if not self.cache.is_fresh(k)]
        return await self.prewarm(missing, reason)

    def start_prewarming(self, keys: list[str], reason: str) -> int:
        """Prewarm ``keys`` in the background; how many it started (0 with prewarming off).

        An admin call must not wait for it: on a saturated database a computation takes
        seconds, past the gateway's admin deadline, and the call would read as failed.
        ``self.prewarming`` is the task, for whoever needs to wait (tests).
        """
        if not self._enabled["cache_prewarming"] or not keys:
            return 0
        self.prewarming = self._spawn(self.prewarm(keys, reason))
        return len(keys)

    async def invalidate(self) -> dict[str, Any]:
        """Drop the whole cache; the hottest keys start prewarming in the background."""
        hottest = self.prewarm_candidates()
        removed = self.cache.invalidate()
        prewarming = self.start_prewarming(hottest, "cache invalidated")
        return {"removed": removed, "prewarming": prewarming}

    # ----------------------------------------------------------------- reading
    def cache_state(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "entries": len(cache),
            "hits": cache.hits,
            "misses": cache.misses,
            "stale": cache.stale,
            "hot_keys": sorted(cache.hot_keys)[:20],
        }

    def coalescing_state(self) -> dict[str, Any]:
        return {
            "computations": self.computations,
            "prewarm_computations": self.prewarm_computations,
            "coalesced": self.coalesced,
            "waiting": self.coalescing_waiters,
            "stale_fallbacks": self.stale_fallbacks,
        }

    def precompute_jitter_state(self) -> dict[str, Any]:
        return {
            "enabled": self._enabled["precompute_jitter"],
            "delays": self.precompute_jitter_delays,
            "seconds": self.precompute_jitter_seconds,
            "correlation": self._correlation(),
        }
