"""The calls one cell makes to what it depends on, and every defense on them.

A cell calls three simulated dependencies (the database included) and, through the
gateway, the configuration every cell shares. Every such call leaves the cell through a
circuit breaker; a dependency call goes through the library's ``Guard`` (breaker ->
adaptive throttle -> retry policy with budget -> the call, with the caller's fallback).
This part owns those objects, the counters the metrics and the control loop read, and the
two periodic jobs' bodies that call out (the recommendation model's refresh, the
shared-config poll). It knows nothing of requests, the cache or the control loop.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chaosemergence.app.dependency import DependencyError, SimulatedDependency
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.settings import SystemSettings
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
    LoadShedError,
    RetryBudget,
    RetryPolicy,
)

__all__ = ["NO_FALLBACK", "RATE_ONLY", "SHARED_BREAKER", "DependencyClients"]

THROTTLE_WINDOW_SECONDS = 10.0
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
# A breaker trip: a breaker entering one of these states.
TRIP_STATES = (BreakerState.OPEN, BreakerState.EMERGENCY)

Fallback = Callable[[], Awaitable[dict[str, Any]]]


class DependencyClients:
    """One cell's clients of its dependencies and of the shared configuration.

    ``shared_call`` calls the dependency every cell shares (through the gateway); without it
    there is no shared breaker and no poll. ``jitter_active()`` says whether retries back
    off with jitter (the timers' state: removing jitter is a fault).
    """

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        faults: FaultTable,
        *,
        rng: random.Random,
        events: EventLog,
        jitter_active: Callable[[], bool],
        shared_call: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._index = index
        self._settings = settings
        self._events = events
        self._jitter_active = jitter_active
        self._shared_call = shared_call
        self.dependencies = {
            name: SimulatedDependency(name, dep, faults, rng=rng, clock=clock)
            for name, dep in settings.dependencies.items()
        }
        # A throttle rejection is a failure to the breaker (the backend is refusing work),
        # so it serves the fallback.
        self.breakers = {
            name: CircuitBreaker(
                f"cell{index}.{name}",
                RATE_ONLY if name in NO_FALLBACK else BreakerConfig(),
                clock=clock,
                events=events,
            )
            for name in self.dependencies
        }
        # The shared-config poll leaves the cell too: its own breaker (not a dependency of
        # user requests, so kept apart from `breakers`).
        self.shared_breaker: CircuitBreaker | None = (
            CircuitBreaker(f"cell{index}.{SHARED_BREAKER}", RATE_ONLY, clock=clock, events=events)
            if shared_call is not None
            else None
        )
        # Trips (a breaker entering OPEN or EMERGENCY), per breaker and state: their own
        # events (`breaker_trip`) and counter.
        self.breaker_trips: dict[tuple[str, str], int] = {}
        for name, breaker in self.named_breakers().items():
            breaker.add_listener(self._trip_listener(name))
        self.budgets = {name: RetryBudget(clock=clock, events=events) for name in self.dependencies}
        self.throttles = {
            name: AdaptiveThrottle(
                window_seconds=THROTTLE_WINDOW_SECONDS,
                rejected_on=(DependencyError,),
                clock=clock,
                rng=rng,
                events=events,
            )
            for name in self.dependencies
        }
        self._jittered = FullJitterBackoff(base=0.02, cap=0.2, rng=rng)
        self._unjittered = ExponentialBackoff(base=0.02, cap=0.2)
        # Counters read by the metrics collector and the control loop (event loop only).
        self.attempts: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.first_attempts: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.retries: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.fallbacks: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.throttled: dict[str, int] = dict.fromkeys(self.dependencies, 0)
        self.self_calls: dict[str, int] = {"periodic": 0, "retry": 0}
        self.shared = {"attempts": 0, "failures": 0, "rejected": 0}
        self.model_kept = 0  # periodic refreshes answered by the breaker's fallback
        self.retry_policies = {name: self._make_retry_policy(name) for name in self.dependencies}
        # Each dependency call's composition (breaker -> throttle -> retry with budget -> the
        # call, with the caller's fallback): the library's Guard over the layers above.
        self.guards = {name: self._make_guard(name) for name in self.dependencies}

    # ----------------------------------------------------------------- building
    def _make_retry_policy(self, name: str) -> RetryPolicy:
        def on_attempt(attempt: int) -> None:
            self.attempts[name] += 1
            if attempt == 1:
                self.first_attempts[name] += 1
            else:
                self.retries[name] += 1
                self.self_calls["retry"] += 1

        return RetryPolicy(
            max_attempts=self._settings.retry_attempts,
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
            name=f"cell{self._index}.{name}",
            breaker=self.breakers[name],
            throttle=self.throttles[name],
            retry=self.retry_policies[name],
            on_throttled=throttled,
            on_fallback=fell_back,
        )

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
            self._events.record(
                "breaker_trip",
                "activated",
                f"{breaker.name} tripped {old.value} -> {new.value}: {reason}",
                breaker=breaker.name,
                boundary=name,
                state=new.value,
                previous=old.value,
            )

        return tripped

    # ----------------------------------------------------------------- breakers
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

    def breaker_states(self) -> dict[str, BreakerState]:
        return {name: b.state for name, b in self.named_breakers().items()}

    # ----------------------------------------------------------------- calling
    async def call(self, name: str, fallback: Fallback | None) -> dict[str, Any] | None:
        """Call a dependency: breaker -> adaptive throttle -> retries; None means success.

        Every call goes through the dependency's breaker while ``circuit_breaker`` is on.
        With a ``fallback``, a failed or rejected call answers with it (what it returns);
        without one, the breaker still counts the call and rejects it with
        ``CircuitOpenError`` while open (the caller decides what to serve instead).
        """
        dependency = self.dependencies[name]
        self.retry_policies[name].backoff = (
            self._jittered if self._jitter_active() else self._unjittered
        )

        async def operation() -> dict[str, Any] | None:
            await dependency.call()
            return None

        if fallback is None:
            return await self.guards[name].run(operation)
        serve = fallback

        async def answer(_error: BaseException) -> dict[str, Any] | None:
            return await serve()

        return await self.guards[name].run(operation, fallback=answer)

    async def refresh_model(self) -> None:
        """Periodic job: refresh the recommendation model (self-generated load, local).

        Through the recommendations breaker; its fallback keeps the model the cell has.
        """
        self.self_calls["periodic"] += 1

        async def keep_model() -> dict[str, Any]:
            self.model_kept += 1
            return {"model": "kept"}

        with contextlib.suppress(DependencyError, DefenseError):
            await self.call("recommendations", keep_model)

    async def poll_shared(self) -> bool:
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

    # ----------------------------------------------------------------- defenses
    def switch(self, *, breakers: bool, budgets: bool, throttles: bool, reset: bool) -> None:
        """``circuit_breaker``, ``retry_budget`` and ``adaptive_throttle`` on or off; ``reset``
        the throttles (the throttle was just switched off: it stops rejecting at once)."""
        for breaker in self.all_breakers():
            breaker.enabled = breakers
        for policy in self.retry_policies.values():
            policy.enabled = budgets
        for throttle in self.throttles.values():
            throttle.enabled = throttles
            if reset:
                throttle.reset()

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

    def reset_breakers(self) -> None:
        for breaker in self.all_breakers():
            breaker.reset()

    def reset_throttles_and_retries(self) -> None:
        for throttle in self.throttles.values():
            throttle.reset()
        for policy in self.retry_policies.values():
            policy.reset()

    async def aclose(self) -> None:
        for dep in self.dependencies.values():
            await dep.aclose()

    # ----------------------------------------------------------------- reading
    def state(self) -> dict[str, Any]:
        """The breakers, trips, budgets, throttles and dependencies of ``/admin/state``."""
        return {
            "breakers": {name: b.snapshot() for name, b in self.named_breakers().items()},
            "breaker_trips": {
                f"{name}:{state}": n for (name, state), n in self.breaker_trips.items()
            },
            "retry_budgets": {name: b.snapshot() for name, b in self.budgets.items()},
            "throttles": {name: t.snapshot() for name, t in self.throttles.items()},
            "dependencies": {
                name: {
                    "in_flight": d.in_flight,
                    "waiting": d.waiting,
                    "capacity_per_second": d.capacity_per_second,
                    **vars(d.stats),
                }
                for name, d in self.dependencies.items()
            },
        }
