"""One cell: its dependencies, cache, database and defenses, wired together (no HTTP here).

The cell is a failure domain: it owns its SQLite file, its cache and its simulated
dependencies. Defenses are switchable at runtime; switched off, the cell behaves like a
naive service (plain fixed-interval retries, no fallback, no coalescing, unjittered timers)
so negative-control experiments can watch the failure loops close.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaosemergence.app.cache import Cache
from chaosemergence.app.dependency import DependencyError, SimulatedDependency
from chaosemergence.app.faults import FaultTable, validate_fault_request
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.storage import CellStore
from chaosemergence.defenses import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    EmergenceSignals,
    EventLog,
    ExponentialBackoff,
    FullJitterBackoff,
    Jitter,
    RetryBudget,
    RetryPolicy,
    SingleFlight,
)

__all__ = ["DEFENSES", "CellService", "Reply"]

# The defenses a cell can switch on and off (names used by the admin API and the probes).
DEFENSES: tuple[str, ...] = (
    "circuit_breaker",
    "retry_budget",
    "request_coalescing",
    "cache_prewarming",
    "jitter",
)
PREWARM_KEYS = 20
MAX_GROWTH = 100.0


@dataclass(frozen=True)
class Reply:
    """What a handler answers: an HTTP-agnostic status and JSON body."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None


class CellService:
    """Everything one cell does, callable without a web framework."""

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        db_path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = index
        self.settings = settings
        self._clock = clock
        self._wall = wall_clock
        self.rng = random.Random(settings.seed * 1000 + index)
        self.events = EventLog(clock=wall_clock)
        self.faults = FaultTable(clock=clock)
        self.store = CellStore(db_path)
        self.cache = Cache(settings.cache_ttl_seconds, clock=clock)
        self.dependencies = {
            name: SimulatedDependency(name, dep, self.faults, rng=self.rng, clock=clock)
            for name, dep in settings.dependencies.items()
        }
        self.breakers = {
            name: CircuitBreaker(
                f"cell{index}.{name}", BreakerConfig(), clock=clock, events=self.events
            )
            for name in self.dependencies
        }
        self.budgets = {
            name: RetryBudget(clock=clock, events=self.events) for name in self.dependencies
        }
        self.coalescer = SingleFlight("request_coalescing")
        self._jittered = FullJitterBackoff(base=0.02, cap=0.2, rng=self.rng)
        self._unjittered = ExponentialBackoff(base=0.02, cap=0.2)
        self.jitter = Jitter(strategy="uniform", factor=0.5, rng=self.rng)
        self.enabled: dict[str, bool] = dict.fromkeys(DEFENSES, True)
        self.jitter_removed = False
        # Counters read by the metrics collector (event loop only).
        self.attempts: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.retries: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.fallbacks: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.self_calls: dict[str, int] = {"periodic": 0, "retry": 0}
        self.computations = 0
        self.prewarm_computations = 0
        self.coalesced = 0
        self.requests = 0
        self.retry_policies = {name: self._make_retry_policy(name) for name in self.dependencies}
        self._last_coalesce_event = -math.inf
        self._prev_retry_rate = 0.0
        self._prev_attempts = dict(self.attempts)
        self._prev_retries = dict(self.retries)
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._periodic_refresh()))
        self._tasks.append(asyncio.create_task(self._control_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for dep in self.dependencies.values():
            await dep.aclose()
        self.store.close()

    # ------------------------------------------------------------- dependencies
    def _make_retry_policy(self, name: str) -> RetryPolicy:
        def on_attempt(attempt: int) -> None:
            self.attempts[name] += 1
            if attempt > 1:
                self.retries[name] += 1
                self.self_calls["retry"] += 1

        return RetryPolicy(
            max_attempts=3,
            backoff=FullJitterBackoff(base=0.02, cap=0.2, rng=self.rng),
            budget=self.budgets[name],
            retry_on=(DependencyError,),
            on_attempt=on_attempt,
            # Switched off: a naive fixed pause and no budget, like most real clients.
            naive_delay=0.01,
        )

    def _retry_policy(self, name: str) -> RetryPolicy:
        policy = self.retry_policies[name]
        policy.enabled = self.enabled["retry_budget"]
        policy.backoff = self._unjittered if self.jitter_removed else self._jittered
        return policy

    async def call_dependency(
        self, name: str, fallback: Callable[[], Awaitable[dict[str, Any]]] | None
    ) -> dict[str, Any] | None:
        """Call a dependency through retries and the breaker; None means it succeeded."""
        dependency = self.dependencies[name]
        policy = self._retry_policy(name)

        async def operation() -> dict[str, Any] | None:
            await policy.run(dependency.call)
            return None

        breaker = self.breakers[name]
        breaker.enabled = self.enabled["circuit_breaker"]
        if not breaker.enabled or fallback is None:
            return await operation()

        async def on_fallback(_error: BaseException | None) -> dict[str, Any] | None:
            self.fallbacks[name] += 1
            return await fallback()

        return await breaker.call(operation, on_fallback)

    # ----------------------------------------------------------------- handlers
    async def profile(self, user_id: str) -> Reply:
        self.requests += 1
        key = f"profile:{user_id}"
        cached = self.cache.get(key)
        if cached is not None:
            return Reply(200, {**cached[0], "cell": self.index, "cache": "hit"})

        async def compute() -> dict[str, str]:
            self.computations += 1  # a computation a user's miss triggered
            return await self._load_profile(user_id)

        try:
            if self.enabled["request_coalescing"]:
                if self.coalescer.waiters(key) > 0:
                    self.coalesced += 1
                    self._note_coalescing()
                profile = await self.coalescer.do(key, compute, timeout=2.0)
            else:
                profile = await compute()
        except (DependencyError, CircuitOpenError, TimeoutError) as error:
            return Reply(503, {"error": f"profile unavailable: {error}", "cell": self.index}, 1)
        return Reply(200, {**profile, "cell": self.index, "cache": "miss"})

    async def _load_profile(self, user_id: str) -> dict[str, str]:
        """One backend computation: the database call, the read, then the cache fill."""
        await self.call_dependency("database", None)
        profile = await self.store.read_profile(user_id)
        self.cache.put(f"profile:{user_id}", profile)
        return profile

    async def _prewarm(self, key: str) -> None:
        # Through the coalescer: users who miss meanwhile wait for this computation.
        user_id = key.split(":", 1)[1]
        self.prewarm_computations += 1
        if self.enabled["request_coalescing"]:
            await self.coalescer.do(key, lambda: self._load_profile(user_id), timeout=2.0)
        else:
            await self._load_profile(user_id)

    async def pay(self, user_id: str, amount_cents: int, idempotency_key: str) -> Reply:
        self.requests += 1
        created = await self.store.record_payment(user_id, idempotency_key, amount_cents, "pending")
        if not created:
            return Reply(200, {"idempotency_key": idempotency_key, "status": "duplicate"})

        async def queue_for_later() -> dict[str, Any]:
            # The write is committed; settlement with the provider is retried later.
            return {"status": "pending"}

        try:
            degraded = await self.call_dependency("payment_provider", queue_for_later)
        except (DependencyError, CircuitOpenError) as error:
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
            await self.store.set_payment_status(idempotency_key, status)
        return Reply(
            201 if status == "settled" else 202,
            {
                "idempotency_key": idempotency_key,
                "status": status,
                "acknowledged": True,
                "cell": self.index,
            },
        )

    async def recommendations(self, user_id: str) -> Reply:
        self.requests += 1

        async def popular() -> dict[str, Any]:
            return {"items": ["popular-1", "popular-2", "popular-3"], "degraded": True}

        try:
            degraded = await self.call_dependency("recommendations", popular)
        except (DependencyError, CircuitOpenError) as error:
            return Reply(503, {"error": f"recommendations failed: {error}", "cell": self.index}, 1)
        if degraded:
            return Reply(200, {**degraded, "user_id": user_id, "cell": self.index})
        items = [f"item-{(sum(map(ord, user_id)) * 31 + i) % 997}" for i in range(3)]
        return Reply(
            200, {"items": items, "degraded": False, "user_id": user_id, "cell": self.index}
        )

    def _note_coalescing(self) -> None:
        now = self._clock()
        if now - self._last_coalesce_event > 5.0:
            self.events.record(
                "request_coalescing", "activated", "concurrent misses shared one computation"
            )
        self._last_coalesce_event = now

    # -------------------------------------------------------- background work
    async def _periodic_refresh(self) -> None:
        """The cell's own periodic job: refresh its recommendation model (self-generated load)."""
        interval = self.settings.refresh_interval_seconds
        # Phase randomization at start-up (unless jitter is removed).
        await asyncio.sleep(self.rng.uniform(0, interval))
        while True:
            self.self_calls["periodic"] += 1
            with contextlib.suppress(DependencyError, CircuitOpenError):
                await self.call_dependency("recommendations", None)
            await asyncio.sleep(self._next_interval(interval))

    def _next_interval(self, interval: float) -> float:
        if self.jitter_removed or not self.enabled["jitter"]:
            # Naive timer aligned to the wall clock: every cell fires at the same instant.
            now = self._wall()
            return interval - (now % interval) + 1e-3
        return self.jitter.apply(interval)

    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.control_tick()

    def control_tick(self) -> None:
        """Once a second: feed the breakers the emergence signals they act on."""
        total_attempts = sum(self.attempts.values()) - sum(self._prev_attempts.values())
        total_retries = sum(self.retries.values()) - sum(self._prev_retries.values())
        retry_rate = total_retries / total_attempts if total_attempts else 0.0
        # Growth from zero is "a lot", capped so it stays a finite, JSON-able number.
        growth = (
            min(MAX_GROWTH, retry_rate / self._prev_retry_rate)
            if self._prev_retry_rate > 0
            else (MAX_GROWTH if retry_rate > 0 else 1.0)
        )
        load = max(dep.utilization for dep in self.dependencies.values())
        signals = EmergenceSignals(retry_rate=retry_rate, retry_growth=growth, load=load)
        for breaker in self.breakers.values():
            breaker.report_signals(signals)
        self._prev_retry_rate = retry_rate
        self._prev_attempts = dict(self.attempts)
        self._prev_retries = dict(self.retries)
        self.cache.decay()

    # ------------------------------------------------------------------- admin
    def inject_fault(self, request: dict[str, Any], fault_id: str | None = None) -> dict[str, Any]:
        normalized = validate_fault_request(request, self.dependencies)
        fault = self.faults.add(normalized, fault_id)
        return fault.as_dict(self._clock())

    async def invalidate_cache(self) -> dict[str, Any]:
        hottest = self.cache.hottest(PREWARM_KEYS)
        removed = self.cache.invalidate()
        prewarmed = 0
        if self.enabled["cache_prewarming"] and hottest:
            self.events.record(
                "cache_prewarming", "activated", f"prewarming {len(hottest)} hot keys"
            )
            results = await asyncio.gather(
                *(self._prewarm(key) for key in hottest), return_exceptions=True
            )
            prewarmed = sum(1 for r in results if not isinstance(r, BaseException))
        return {"removed": removed, "prewarmed": prewarmed}

    def set_jitter(self, enabled: bool) -> None:
        self.jitter_removed = not enabled

    def set_defenses(self, enabled: bool, names: list[str] | None) -> list[str]:
        chosen = list(DEFENSES) if names is None else names
        unknown = [n for n in chosen if n not in DEFENSES]
        if unknown:
            raise ValueError(f"names: unknown defense(s) {unknown}; known: {', '.join(DEFENSES)}")
        for name in chosen:
            self.enabled[name] = enabled
        return chosen

    def reset(self) -> dict[str, Any]:
        cleared = self.faults.clear()
        self.enabled = dict.fromkeys(DEFENSES, True)
        self.jitter_removed = False
        for breaker in self.breakers.values():
            breaker.reset()
        return {"faults_cleared": cleared}

    def state(self) -> dict[str, Any]:
        return {
            "cell": self.index,
            "defenses": dict(self.enabled),
            "jitter_removed": self.jitter_removed,
            "faults": self.faults.snapshot(),
            "breakers": {name: b.snapshot() for name, b in self.breakers.items()},
            "dependencies": {
                name: {"in_flight": d.in_flight, "waiting": d.waiting, **vars(d.stats)}
                for name, d in self.dependencies.items()
            },
            "cache": {
                "entries": len(self.cache),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
            },
            "coalescing": {"computations": self.computations, "coalesced": self.coalesced},
        }

    def breaker_states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self.breakers.items()}
