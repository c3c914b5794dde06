"""One cell: its dependencies, cache, database and defenses, wired together (no HTTP here).

The cell is a failure domain: it owns its SQLite file, its cache and its simulated
dependencies. Every defense of ``chaosemergence.defenses`` is wired in and switchable at
runtime; switched off, the cell behaves like a naive service (plain fixed-interval retries,
no fallback, no coalescing, unjittered timers, no shedding, no guardrails) so
negative-control experiments can watch the failure loops close.

A user request goes: admission (``app/admission.py``: the cell's boundary, staged recovery,
memory guardrail, GC breaker, load shedder) -> GC pauses (``app/memory.py``) -> handler ->
dependency call (the library's ``Guard``: breaker -> adaptive throttle -> retry policy with
budget -> simulated dependency). Every call that leaves the cell goes through a circuit
breaker: its three dependencies (the database included) and the shared-config poll. Once a second
``app/control.py`` measures the cell and ticks the ControlLoop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosemergence.app.admission import Admission
from chaosemergence.app.boundary import CellBoundary
from chaosemergence.app.cache import Cache
from chaosemergence.app.capacity import CallerGaveUp, CellCapacity, CellOverloaded
from chaosemergence.app.cell_state import cell_state
from chaosemergence.app.control import CellControl, CellMeter
from chaosemergence.app.dependency import DependencyError, SimulatedDependency
from chaosemergence.app.event_file import EventFile
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.jobs import PeriodicJob
from chaosemergence.app.memory import MemoryModel
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.storage import CellStore
from chaosemergence.app.switches import DEFENSES, apply_switches
from chaosemergence.contract import check_fault
from chaosemergence.defenses import (
    AdaptiveThrottle,
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    DefenseError,
    EventLog,
    ExponentialBackoff,
    FullJitterBackoff,
    Guard,
    Jitter,
    LoadShedder,
    LoadShedError,
    MetricsRecorder,
    ProbabilisticExpiry,
    RetryBudget,
    RetryPolicy,
    SingleFlight,
)
from chaosemergence.defenses.detect import ComplexityBudget
from chaosemergence.defenses.metrics import NULL_RECORDER

__all__ = ["DEFENSES", "CellService", "Reply"]

logger = logging.getLogger("chaosemergence.cell")

# Prewarming after an invalidation: at most PREWARM_KEYS of the hottest keys, and only keys
# asked about at least PREWARM_MIN_RATE times lately (a decayed count: the long tail asked
# once is not worth a database call), recomputed PREWARM_CONCURRENCY at a time, hottest
# first. Prewarming goes through the same capacity-limited database as users' misses: all at
# once, it would be a herd of its own.
PREWARM_KEYS = 20
PREWARM_MIN_RATE = 2.0
PREWARM_CONCURRENCY = 2
THROTTLE_WINDOW_SECONDS = 10.0
# Coalescing and early refreshes happen per request: one event per burst, not per request.
NOTE_EVERY_SECONDS = 5.0
EVENT_HISTORY = 2000
POPULAR = {"items": ["popular-1", "popular-2", "popular-3"], "degraded": True}
# The breaker on the poll of the configuration every cell shares (hosted by the gateway).
SHARED_BREAKER = "shared_config"
# Dependencies whose callers have no fallback for every call: a profile computation has
# nothing to serve when the database is refused (only an expired entry, if one is left).
NO_FALLBACK: frozenset[str] = frozenset({"database"})
# Breakers of the database and of the shared-config poll judge by failure rate (half of at
# least 20 calls in their 60 s window), not by 5 consecutive failures. Many concurrent
# callers (users' misses queueing at a database of a few workers; pollers retrying every
# 200 ms) make 5 consecutive failures out of a blip of a fraction of a second, and with no
# fallback a trip turns a slow database into a failed one: measured, the thundering-herd
# experiment's defended run failed 37% of users that way. A sustained failure still trips
# them: a failing database in about 20 calls, a shared outage once failures outnumber the
# window's successes (6-17 s from a healthy window with 8 or 1 pollers per cell).
RATE_ONLY = BreakerConfig(failure_threshold=0)
# The seed's coalescer: when the cells' load correlates above 0.5, a computation starts after
# a random 0-100 ms, so synchronized misses do not reach the database in the same instant.
PRECOMPUTE_JITTER_CORRELATION = 0.5
PRECOMPUTE_JITTER_SECONDS = 0.1
# A breaker trip: a breaker entering one of these states.
TRIP_STATES = (BreakerState.OPEN, BreakerState.EMERGENCY)


@dataclass(frozen=True)
class Reply:
    """What a handler answers: an HTTP-agnostic status and JSON body."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None


class CellService:
    """Everything one cell does, callable without a web framework.

    ``shared_call`` calls the dependency every cell shares (through the gateway); without
    it the cell runs no shared-config job. ``on_restart(reason)`` is how the cell asks its
    server to stop and be restarted (predictive restart); ``on_oom(reason)`` how it dies at
    its memory limit. ``events_file`` keeps the events across restarts; ``recorder``
    receives the defenses' metrics.
    """

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        db_path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        shared_call: Callable[[], Awaitable[None]] | None = None,
        on_restart: Callable[[str], None] | None = None,
        on_oom: Callable[[str], None] | None = None,
        events_file: Path | None = None,
        switches: dict[str, bool] | None = None,
        jitter_removed: bool = False,
        recorder: MetricsRecorder = NULL_RECORDER,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.index = index
        self._sleep = sleep
        self.settings = settings
        # The cell's own worker pool (0 workers = unlimited): what failover can overload.
        self.capacity = CellCapacity(
            settings.cell_workers,
            settings.cell_request_cost_ms,
            settings.cell_queue_limit,
            clock=clock,
        )
        self._clock = clock
        self._wall = wall_clock
        self._shared_call = shared_call
        self._on_restart = on_restart
        self._on_oom = on_oom
        self.rng = random.Random(settings.seed * 1000 + index)
        # Every activation is also a counter (emergence_defense_events_total), via the recorder.
        self.events = EventLog(clock=wall_clock, maxlen=EVENT_HISTORY, recorder=recorder)
        # Events of this cell's earlier processes, kept in a file across restarts.
        self.previous_events: list[dict[str, Any]] = []
        if events_file is not None:
            store = EventFile(events_file, EVENT_HISTORY)
            self.previous_events = store.load()
            self.events.subscribe(store.append)
        self.faults = FaultTable(clock=clock)
        self.store = CellStore(db_path)
        self.cache = Cache(settings.cache_ttl_seconds, clock=clock)
        self.dependencies = {
            name: SimulatedDependency(name, dep, self.faults, rng=self.rng, clock=clock)
            for name, dep in settings.dependencies.items()
        }
        # A throttle rejection is a failure to the breaker (the backend is refusing work),
        # so it serves the fallback.
        self.breakers = {
            name: CircuitBreaker(
                f"cell{index}.{name}",
                RATE_ONLY if name in NO_FALLBACK else BreakerConfig(),
                clock=clock,
                events=self.events,
            )
            for name in self.dependencies
        }
        # The shared-config poll leaves the cell too: its own breaker (not a dependency of
        # user requests, so kept apart from `breakers`).
        self.shared_breaker: CircuitBreaker | None = (
            CircuitBreaker(
                f"cell{index}.{SHARED_BREAKER}",
                RATE_ONLY,
                clock=clock,
                events=self.events,
            )
            if shared_call is not None
            else None
        )
        # Trips (a breaker entering OPEN or EMERGENCY), per breaker and state: their own
        # events (`breaker_trip`) and counter.
        self.breaker_trips: dict[tuple[str, str], int] = {}
        for name, breaker in self.named_breakers().items():
            breaker.add_listener(self._trip_listener(name))
        self.budgets = {
            name: RetryBudget(clock=clock, events=self.events) for name in self.dependencies
        }
        self.throttles = {
            name: AdaptiveThrottle(
                window_seconds=THROTTLE_WINDOW_SECONDS,
                rejected_on=(DependencyError,),
                clock=clock,
                rng=self.rng,
                events=self.events,
            )
            for name in self.dependencies
        }
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
        self._jittered = FullJitterBackoff(base=0.02, cap=0.2, rng=self.rng)
        self._unjittered = ExponentialBackoff(base=0.02, cap=0.2)
        # Timers' plain jitter (what /admin/jitter removes and restores), and the jitter
        # defense: the same spread while calm, whose factor the control loop moves with the
        # measured correlation and forces to the maximum when the cells synchronize.
        self.base_jitter = Jitter("uniform", 0.25, rng=self.rng, name="base_jitter")
        self.jitter = Jitter(
            strategy="correlated",
            factor=0.5,
            rng=self.rng,
            adaptive_distribution="exponential",
            events=self.events,
        )
        self.shedder = LoadShedder(
            ComplexityBudget(
                request_capacity=settings.cell_request_capacity,
                user_capacity=settings.cell_user_capacity,
                data_capacity=settings.cell_data_capacity_bytes,
            ),
            clock=clock,
            rng=self.rng,
            events=self.events,
        )
        self.xfetch = ProbabilisticExpiry(
            settings.xfetch_beta, name="early_expiration", clock=clock, rng=self.rng
        )
        self.memory = MemoryModel(
            settings,
            on_oom=self._die,
            on_restart=self.request_restart,
            clock=clock,
            events=self.events,
        )
        self.meter = CellMeter(clock=clock)
        self.boundary = CellBoundary(index, settings.cells, events=self.events)
        self.control = CellControl(self, clock=clock, events=self.events)
        self.admission = Admission(self.control.recovery, self.memory, self.shedder, self.boundary)
        self.enabled: dict[str, bool] = dict.fromkeys(DEFENSES, True)
        self.jitter_removed = jitter_removed
        self.jitter_restored_by: str | None = None
        self.restart_reason: str | None = None
        # Counters read by the metrics collector (event loop only).
        self.attempts: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.first_attempts: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.retries: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.fallbacks: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.throttled: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.self_calls: dict[str, int] = {"periodic": 0, "retry": 0}
        self.shared = {"attempts": 0, "failures": 0, "rejected": 0}
        self.computations = 0
        self.prewarm_computations = 0
        self.early_refreshes = 0
        self.coalesced = 0
        self.coalescing_waiters = 0
        self.stale_fallbacks = 0  # profiles served stale because the database path failed
        self.precompute_jitter_delays = 0
        self.precompute_jitter_seconds = 0.0
        self.model_kept = 0  # periodic refreshes answered by the breaker's fallback
        self.requests = 0
        self.retry_policies = {name: self._make_retry_policy(name) for name in self.dependencies}
        # Each dependency call's composition (breaker -> throttle -> retry with budget -> the
        # call, with the caller's fallback): the library's Guard over the layers above.
        self.guards = {name: self._make_guard(name) for name in self.dependencies}
        self._noted: dict[str, float] = {}
        self._refreshing: set[str] = set()
        self._background: set[asyncio.Task[Any]] = set()
        # The last background prewarm (start_prewarming), for whoever must wait for it.
        self.prewarming: asyncio.Task[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.jobs = [
            PeriodicJob(
                "refresh_recommendations",
                settings.refresh_interval_seconds,
                self._refresh_recommendations,
                jitter=self.timer_jitter,
                naive=self.timers_naive,
                rng=self.rng,
                clock=clock,
            )
        ]
        if shared_call is not None:
            # One poller per configuration namespace, each on its own timer and phase; a
            # failed poll is retried after a short delay until it succeeds.
            self.jobs.extend(
                PeriodicJob(
                    f"poll_shared_config[{namespace}]",
                    settings.shared_poll_interval_seconds,
                    self._poll_shared_config,
                    jitter=self.timer_jitter,
                    naive=self.timers_naive,
                    rng=self.rng,
                    retry_delay=settings.shared_poll_retry_seconds,
                    clock=clock,
                )
                for namespace in range(settings.shared_pollers_per_cell)
            )
        if switches:
            self.set_switches(switches)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        for job in self.jobs:
            self._tasks.append(asyncio.create_task(job.run()))
        self._tasks.append(asyncio.create_task(self.control.run(asyncio.sleep)))
        self._tasks.append(asyncio.create_task(self.memory.run()))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for dep in self.dependencies.values():
            await dep.aclose()
        self.store.close()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # ------------------------------------------------------------- dependencies
    def _make_retry_policy(self, name: str) -> RetryPolicy:
        def on_attempt(attempt: int) -> None:
            self.attempts[name] += 1
            if attempt == 1:
                self.first_attempts[name] += 1
            else:
                self.retries[name] += 1
                self.self_calls["retry"] += 1

        return RetryPolicy(
            max_attempts=self.settings.retry_attempts,
            backoff=self._jittered,
            budget=self.budgets[name],
            retry_on=(DependencyError,),
            on_attempt=on_attempt,
            # Switched off: a naive fixed pause and no budget, like most real clients.
            naive_delay=0.01,
        )

    def _make_guard(self, name: str) -> Guard:
        def throttled(_error: LoadShedError) -> None:
            self.throttled[name] += 1

        def fell_back(_error: BaseException) -> None:
            self.fallbacks[name] += 1

        return Guard(
            name=f"cell{self.index}.{name}",
            breaker=self.breakers[name],
            throttle=self.throttles[name],
            retry=self.retry_policies[name],
            on_throttled=throttled,
            on_fallback=fell_back,
        )

    def named_breakers(self) -> dict[str, CircuitBreaker]:
        """Every breaker on the cell's boundaries, by what it guards."""
        named = dict(self.breakers)
        if self.shared_breaker is not None:
            named[SHARED_BREAKER] = self.shared_breaker
        return named

    def all_breakers(self) -> list[CircuitBreaker]:
        return list(self.named_breakers().values())

    def loop_breakers(self) -> list[CircuitBreaker]:
        """The breakers the control loop drives: those whose callers all have a fallback.

        EMERGENCY and the phase defenses' forced half-open reject calls pre-emptively, to
        serve the fallback; a breaker whose callers have none (the database) trips only on
        what it sees. The shared-config poll's answer to synchronization is jitter.
        """
        return [b for name, b in self.breakers.items() if name not in NO_FALLBACK]

    def _trip_listener(
        self, name: str
    ) -> Callable[[CircuitBreaker, BreakerState, BreakerState, str], None]:
        def tripped(
            breaker: CircuitBreaker, old: BreakerState, new: BreakerState, reason: str
        ) -> None:
            if new not in TRIP_STATES:
                return
            key = (name, new.value)
            self.breaker_trips[key] = self.breaker_trips.get(key, 0) + 1
            self.events.record(
                "breaker_trip",
                "activated",
                f"{breaker.name} tripped {old.value} -> {new.value}: {reason}",
                breaker=breaker.name,
                boundary=name,
                state=new.value,
                previous=old.value,
            )

        return tripped

    def timers_naive(self) -> bool:
        """Whether timers and backoffs run without jitter (fixed intervals and delays).

        Removing jitter is the fault; it aligns nothing by itself (every timer keeps its own
        phase). Only the jitter defense's response (maximum jitter, then putting it back)
        undoes it.
        """
        return self.jitter_removed and not (self.enabled["jitter"] and self.jitter.maximum)

    def jitter_active(self) -> bool:
        return not self.timers_naive()

    def timer_jitter(self) -> Jitter:
        """The jitter the timers draw from: the defense's when it is on, else the plain one."""
        return self.jitter if self.enabled["jitter"] else self.base_jitter

    def _backoff(self) -> FullJitterBackoff | ExponentialBackoff:
        return self._jittered if self.jitter_active() else self._unjittered

    async def call_dependency(
        self, name: str, fallback: Callable[[], Awaitable[dict[str, Any]]] | None
    ) -> dict[str, Any] | None:
        """Call a dependency: breaker -> adaptive throttle -> retries; None means success.

        Every call goes through the dependency's breaker while ``circuit_breaker`` is on.
        With a ``fallback``, a failed or rejected call answers with it (what it returns);
        without one, the breaker still counts the call and rejects it with
        ``CircuitOpenError`` while open (the caller decides what to serve instead).
        """
        dependency = self.dependencies[name]
        self.retry_policies[name].backoff = self._backoff()

        async def operation() -> dict[str, Any] | None:
            await dependency.call()
            return None

        if fallback is None:
            return await self.guards[name].run(operation)
        serve = fallback

        async def answer(_error: BaseException) -> dict[str, Any] | None:
            return await serve()

        return await self.guards[name].run(operation, fallback=answer)

    # ----------------------------------------------------------------- requests
    async def handle(
        self,
        route: str,
        user_id: str,
        work: Callable[[], Awaitable[Reply]],
        caller_timeout: float | None = None,
    ) -> Reply:
        """Admit (or refuse) one user request, pay the GC pause, run it, measure it.

        `caller_timeout`: seconds the caller waits (None: unknown). With load shedding on, a
        request still waiting for a worker when it runs out is dropped, not served.
        """
        self.requests += 1
        foreign = self.boundary.arrive(user_id)
        refusal = self.admission.check(route, foreign=foreign)
        if refusal is not None:
            self.meter.refused(user_id)
            body = {"error": refusal.reason, "shed_by": refusal.defense, "cell": self.index}
            return Reply(refusal.status, body, refusal.retry_after)
        started = self._clock()
        deadline = None
        if caller_timeout is not None and self.enabled["load_shedding"]:
            deadline = started + caller_timeout
        self.memory.enter()
        try:
            async with self.capacity.slot(deadline):
                # Its GC pause, then its work, delayed by every pause that stops the world.
                reply = await self.memory.run_request(work)
        except CellOverloaded as error:
            reply = Reply(503, {"error": f"cell overloaded: {error}", "cell": self.index}, 1)
        except CallerGaveUp as error:
            # Without this, a queue that outgrew its callers' patience stays full of work
            # nobody reads, and the cell never catches up (the loop behind the cascades).
            self._note("load_shedding", "dropped requests whose caller had given up")
            self.meter.refused(user_id)
            body = {"error": f"dropped: {error}", "shed_by": "load_shedding", "cell": self.index}
            return Reply(503, body, 1)
        finally:
            self.memory.leave()
        self.meter.observe(
            user_id,
            self._clock() - started,
            reply.status,
            len(json.dumps(reply.body)),
            did_work=reply.body.get("cache") not in ("hit", "stale"),
        )
        return reply

    async def profile(self, user_id: str, *, caller_timeout: float | None = None) -> Reply:
        return await self.handle("profile", user_id, lambda: self._profile(user_id), caller_timeout)

    async def pay(
        self,
        user_id: str,
        amount_cents: int,
        idempotency_key: str,
        *,
        caller_timeout: float | None = None,
    ) -> Reply:
        return await self.handle(
            "payments",
            user_id,
            lambda: self._pay(user_id, amount_cents, idempotency_key),
            caller_timeout,
        )

    async def recommendations(self, user_id: str, *, caller_timeout: float | None = None) -> Reply:
        return await self.handle(
            "recommendations", user_id, lambda: self._recommendations(user_id), caller_timeout
        )

    # ----------------------------------------------------------------- handlers
    async def _profile(self, user_id: str) -> Reply:
        key = f"profile:{user_id}"
        emergency = self.control.stampede.emergency
        entry, found = self.cache.lookup(key, allow_stale=emergency)
        if entry is not None:
            if found == "stale":
                self._refresh_in_background(key, user_id)
            elif self.xfetch.enabled and self.xfetch.should_refresh(entry.expires_at, entry.delta):
                self.early_refreshes += 1
                self._note("early_expiration", "refreshing a hot key before it expires (XFetch)")
                self._refresh_in_background(key, user_id)
            return Reply(200, {**entry.value, "cell": self.index, "cache": found})

        async def compute() -> dict[str, str]:
            self.computations += 1  # a computation a user's miss triggered
            return await self._load_profile(user_id)

        try:
            if self.enabled["request_coalescing"] or emergency:
                if self.coalescer.waiters(key) > 0:
                    self.coalesced += 1
                    self._note("request_coalescing", "concurrent misses shared one computation")
                self.coalescing_waiters += 1
                try:
                    profile = await self.coalescer.do(key, compute, timeout=self.coalesce_timeout)
                finally:
                    self.coalescing_waiters -= 1
            else:
                profile = await compute()
        except (DependencyError, DefenseError, TimeoutError) as error:
            stale = self._stale_fallback(key)
            if stale is not None:
                return stale
            return Reply(503, {"error": f"profile unavailable: {error}", "cell": self.index}, 1)
        return Reply(200, {**profile, "cell": self.index, "cache": "miss"})

    def _stale_fallback(self, key: str) -> Reply | None:
        """The database breaker's fallback: the expired value still cached, if any.

        Only while ``circuit_breaker`` is on (off, a failed computation is an error, as in a
        naive service). After an invalidation nothing is left to serve.
        """
        database = self.breakers.get("database")
        if database is None or not database.enabled:
            return None
        entry = self.cache.peek(key)
        if entry is None:
            return None
        self.stale_fallbacks += 1
        self._note("stale_fallback", "database path failing: served expired profiles stale")
        return Reply(200, {**entry.value, "cell": self.index, "cache": "stale"})

    async def _load_profile(self, user_id: str) -> dict[str, str]:
        """One backend computation: the database round trips, the read, then the cache fill.

        A profile takes ``settings.profile_queries`` database calls, one after the other:
        each waits in the database's queue behind whatever arrived meanwhile.
        """
        await self._precompute_jitter()
        started = self._clock()
        for _ in range(self.settings.profile_queries):
            await self.call_dependency("database", None)
        profile = await self.store.read_profile(user_id)
        # The time it took is XFetch's delta: slow values are refreshed earlier.
        self.cache.put(f"profile:{user_id}", profile, self._clock() - started)
        return profile

    async def _precompute_jitter(self) -> None:
        """The seed's coalescer jitter: 0-100 ms before a computation while correlation > 0.5."""
        if not self.enabled["precompute_jitter"]:
            return
        correlation = self.control.fresh_correlation()
        if correlation <= PRECOMPUTE_JITTER_CORRELATION:
            return
        delay = self.rng.uniform(0.0, PRECOMPUTE_JITTER_SECONDS)
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
                        key, lambda: self._load_profile(user_id), timeout=self.coalesce_timeout
                    )
            finally:
                self._refreshing.discard(key)

        self.spawn(refresh())

    async def _prewarm(self, key: str) -> None:
        """Recompute ``key`` unless it is fresh again (a user's miss may have filled it)."""
        if self.cache.is_fresh(key):
            return
        user_id = key.split(":", 1)[1]

        async def compute() -> dict[str, str]:
            self.prewarm_computations += 1
            return await self._load_profile(user_id)

        # Through the coalescer: users who miss meanwhile wait for this computation, and a
        # computation a user's miss already started is joined rather than repeated.
        if self.enabled["request_coalescing"]:
            await self.coalescer.do(key, compute, timeout=self.coalesce_timeout)
        else:
            await compute()

    async def prewarm(self, keys: Iterable[str], reason: str) -> int:
        """Recompute ``keys`` (when cache prewarming is on), PREWARM_CONCURRENCY at a time.

        Returns how many are warm afterwards (recomputed, or found fresh again).
        """
        chosen = list(keys)
        if not self.enabled["cache_prewarming"] or not chosen:
            return 0
        self.events.record(
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
        if not self.enabled["cache_prewarming"] or not keys:
            return 0
        self.prewarming = self.spawn(self.prewarm(keys, reason))
        return len(keys)

    async def _pay(self, user_id: str, amount_cents: int, idempotency_key: str) -> Reply:
        # Committed before anything else: an acknowledged payment is never lost. (Unless the
        # test-only unsafe mode queues the write and acknowledges first: what lost_writes
        # exists to catch.)
        unsafe = self.settings.unsafe_ack_before_commit
        created = await self.store.record_payment(
            user_id, idempotency_key, amount_cents, "pending", ack_before_commit=unsafe
        )
        if not created:
            return Reply(200, {"idempotency_key": idempotency_key, "status": "duplicate"})

        async def queue_for_later() -> dict[str, Any]:
            # The write is committed; settlement with the provider is retried later.
            return {"status": "pending"}

        try:
            degraded = await self.call_dependency("payment_provider", queue_for_later)
        except (DependencyError, DefenseError) as error:
            return Reply(
                503,
                {
                    "error": f"payment provider failed: {error}",
                    "idempotency_key": idempotency_key,
                    "status": "pending",
                    "acknowledged": True,
                    "cell": self.index,
                },
                1,
            )
        status = "pending" if degraded else "settled"
        if status == "settled":
            await self.store.set_payment_status(idempotency_key, status, ack_before_commit=unsafe)
        return Reply(
            201 if status == "settled" else 202,
            {
                "idempotency_key": idempotency_key,
                "status": status,
                "acknowledged": True,
                "cell": self.index,
            },
        )

    async def _recommendations(self, user_id: str) -> Reply:
        async def popular() -> dict[str, Any]:
            return dict(POPULAR)

        try:
            degraded = await self.call_dependency("recommendations", popular)
        except (DependencyError, DefenseError) as error:
            return Reply(503, {"error": f"recommendations failed: {error}", "cell": self.index}, 1)
        if degraded:
            return Reply(200, {**degraded, "user_id": user_id, "cell": self.index})
        items = [f"item-{(sum(map(ord, user_id)) * 31 + i) % 997}" for i in range(3)]
        return Reply(
            200, {"items": items, "degraded": False, "user_id": user_id, "cell": self.index}
        )

    def _note(self, defense: str, reason: str) -> None:
        """Record a per-request defense once per burst (every NOTE_EVERY_SECONDS at most)."""
        now = self._clock()
        if now - self._noted.get(defense, -math.inf) > NOTE_EVERY_SECONDS:
            self.events.record(defense, "activated", reason)
        self._noted[defense] = now

    # -------------------------------------------------------- background work
    async def _refresh_recommendations(self) -> None:
        """Periodic job: refresh the recommendation model (self-generated load, local).

        Through the recommendations breaker; its fallback keeps the model the cell has.
        """
        self.self_calls["periodic"] += 1

        async def keep_model() -> dict[str, Any]:
            self.model_kept += 1
            return {"model": "kept"}

        with contextlib.suppress(DependencyError, DefenseError):
            await self.call_dependency("recommendations", keep_model)

    async def _poll_shared_config(self) -> bool:
        """Periodic job: poll one namespace of the configuration every cell shares.

        One attempt through the gateway, behind the shared-config breaker; the job retries a
        failure (after its own delay). A poll the open breaker rejects is answered by the
        breaker's fallback: the cell keeps the configuration it has, and the job waits for
        its next period (no call, no retry).
        """
        assert self._shared_call is not None
        self.self_calls["periodic"] += 1
        breaker = self.shared_breaker
        try:
            if breaker is not None and breaker.enabled:
                await breaker.call(self._shared_attempt)
            else:
                await self._shared_attempt()
        except CircuitOpenError:
            self.shared["rejected"] += 1  # the configuration the cell has stays in force
            return True
        except DependencyError:
            self.shared["failures"] += 1
            self.self_calls["retry"] += 1  # the job tries again after its retry delay
            return False
        return True

    async def _shared_attempt(self) -> None:
        assert self._shared_call is not None
        self.shared["attempts"] += 1
        await self._shared_call()

    def on_stampede(self) -> None:
        """Stampede emergency: coalesce every miss, serve stale, prewarm the hottest keys."""
        self.spawn(self.prewarm_hottest("stampede emergency"))

    def drain_queues(self) -> int:
        """Drop queued dependency calls whose callers have gone (metastable recovery)."""
        return sum(dep.drain() for dep in self.dependencies.values())

    def reset_connections(self) -> None:
        """Start every dependency client afresh: breakers closed, throttles and budgets cleared."""
        for breaker in self.all_breakers():
            breaker.reset()
        for throttle in self.throttles.values():
            throttle.reset()
        for budget in self.budgets.values():
            budget.reset()

    def restore_jitter(self, reason: str) -> None:
        """The jitter defense's answer to synchronization: put removed jitter back."""
        if self.enabled["jitter"] and self.jitter_removed:
            self.jitter_removed = False
            self.jitter_restored_by = reason
            logger.warning("cell %s: jitter restored by the control loop: %s", self.index, reason)

    # ------------------------------------------------------------- death spiral
    def request_restart(self, reason: str) -> None:
        """Ask the server for a graceful restart (predictive restart); once."""
        if self.restart_reason is not None:
            return
        self.restart_reason = reason
        logger.warning("cell %s: graceful restart requested: %s", self.index, reason)
        if self._on_restart is not None:
            self._on_restart(reason)

    def _die(self, reason: str) -> None:
        logger.error("cell %s: %s: killed like the OOM killer would", self.index, reason)
        if self._on_oom is not None:
            self._on_oom(reason)

    def start_memory_pressure(self, megabytes_per_second: float, duration: float) -> dict[str, Any]:
        answer = self.memory.start_pressure(megabytes_per_second, duration)
        return {"cell": self.index, **answer}

    # ------------------------------------------------------------------- admin
    def inject_fault(self, request: dict[str, Any], fault_id: str | None = None) -> dict[str, Any]:
        normalized = check_fault(request, self.dependencies)
        fault = self.faults.add(normalized, fault_id)
        return fault.as_dict(self._clock())

    async def invalidate_cache(self) -> dict[str, Any]:
        """Drop the whole cache; the hottest keys start prewarming in the background."""
        hottest = self.prewarm_candidates()
        removed = self.cache.invalidate()
        prewarming = self.start_prewarming(hottest, "cache invalidated")
        return {"removed": removed, "prewarming": prewarming}

    def set_jitter(self, enabled: bool) -> None:
        self.jitter_removed = not enabled
        if not enabled:
            self.jitter_restored_by = None

    def set_defenses(self, enabled: bool, names: list[str] | None) -> list[str]:
        chosen = list(DEFENSES) if names is None else names
        unknown = [n for n in chosen if n not in DEFENSES]
        if unknown:
            raise ValueError(f"names: unknown defense(s) {unknown}; known: {', '.join(DEFENSES)}")
        self.set_switches(dict.fromkeys(chosen, enabled))
        return chosen

    def set_switches(self, switches: dict[str, bool]) -> None:
        """Switch defenses on or off and bring every defense object in line."""
        apply_switches(self, switches)

    async def reset_own(self) -> dict[str, Any]:
        """The cell's own part of a reset, after the embedding cleared the faults and put every
        defense and the jitter back (``EmergenceAdmin.reset``): the defenses' state, the
        ingress, the memory ballast and queues back to normal, the cache warm."""
        self.jitter_restored_by = None
        for breaker in self.all_breakers():
            breaker.reset()
        self.boundary.reset()
        for throttle in self.throttles.values():
            throttle.reset()
        for policy in self.retry_policies.values():
            policy.reset()
        self.shedder.reset()
        self.jitter.reset()
        self.control.reset()
        released = self.memory.clear()
        drained = self.drain_queues()
        prewarmed = await self.prewarm_hottest("reset")
        return {
            "ballast_released_bytes": released,
            "queued_calls_drained": drained,
            "prewarmed": prewarmed,
        }

    # ----------------------------------------------------------------- reading
    def earlier_events(self, since: float) -> list[dict[str, Any]]:
        """The events at or after ``since`` that this cell's earlier processes recorded (the
        embedding's ``history``: ``/admin/events`` lists them before this process's)."""
        return [e for e in self.previous_events if e["at"] >= since]

    def resume_recovery(self, reason: str) -> dict[str, Any]:
        """An operator's answer to a recovery that asked for manual intervention."""
        resumed = self.control.recovery.resume(reason)
        if resumed:
            self.control.restart_measurement()
        return {"cell": self.index, "resumed": resumed, **self.metastable()}

    def metastable(self) -> dict[str, Any]:
        condition = self.control.metastable.condition
        return {
            "cell": self.index,
            "condition": condition.as_dict() if condition else None,
            "recovery": self.control.recovery.snapshot(),
        }

    def state(self) -> dict[str, Any]:
        return cell_state(self)

    def breaker_states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self.named_breakers().items()}
