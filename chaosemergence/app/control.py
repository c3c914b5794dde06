"""The per-cell control loop: once a second, measure the cell and let the ControlLoop act.

``CellMeter`` records what user requests did (latency, status, bytes, user); ``CellControl``
turns one second of it, plus the cell's counters, into ``LoopInputs`` and ticks the
library's ``ControlLoop``, which feeds the breakers, raises or lowers the shedding level,
moves jitter, watches for stampedes and metastable states, and drives the staged recovery.
The recovery's reset actions are carried out here, against the cell, for real.

Measurement choices (see docs/decisions.md):

- latencies are those of requests that did backend work (cache hits excluded), or p99/p50
  of a cache-fronted service would exceed 10 all the time;
- ``load`` is offered demand over capacity: user requests against the cell's request
  capacity, requests held or waiting in the cell's worker pool against its workers, and
  first attempts (not retries) against each dependency's service capacity, whichever is
  higher;
- the cache hit rate is that of the hot keys, so a long tail of one-off users does not read
  as a cold cache;
- ``correlation`` is the last value the gateway pushed (stale after a few seconds), and so
  is ``unhealthy_cells`` (the share of cells whose process is down);
- the cell's isolation score is the seed's ``1 - cross-cell / total`` over its arrivals:
  requests for users homed in another cell crossed a boundary (the gateway failed them
  over); ``cascade_risk`` is the seed's ``0.6 x cross-cell + 0.4 x shared resources``, where
  cross-cell is ``1 - isolation`` and shared resources the share of the cell's calls to the
  dependency every cell shares (the configuration poll) that failed over the last 10 s (at
  least 10 calls, or 0: one failed poll of two a second is not a cascade): a shared
  resource failing under every cell at once is how trouble crosses cell boundaries
  without traffic.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chaosemergence.defenses import EventLog
from chaosemergence.defenses.control import (
    ControlLoop,
    LoopInputs,
    LoopReport,
    RecoveryAction,
    StagedRecovery,
)
from chaosemergence.defenses.detect import (
    ComplexityInputs,
    MetastableDetector,
    MetastableThresholds,
    StampedeDetector,
    cascade_risk,
    isolation_score,
)

if TYPE_CHECKING:
    from chaosemergence.app.cell_timers import CellTimers
    from chaosemergence.app.dependency_clients import DependencyClients
    from chaosemergence.app.ingress import CellIngress
    from chaosemergence.app.memory import MemoryModel
    from chaosemergence.app.profile_cache import ProfileCache
    from chaosemergence.app.settings import SystemSettings

__all__ = ["CALL_GRAPH", "CellControl", "CellMeter", "MeterReading", "percentile"]

logger = logging.getLogger("chaosemergence.cell")

TICK_SECONDS = 1.0
MAX_GROWTH = 100.0
USERS_WINDOW_SECONDS = 10.0
CORRELATION_TTL_SECONDS = 5.0
# The shared-resource part of the cascade risk: failed share of the shared-config polls over
# this many ticks, counted only with at least SHARED_MIN_CALLS polls in them.
SHARED_WINDOW_TICKS = 10
SHARED_MIN_CALLS = 10
METASTABLE_PERSISTENCE = 5
# The staged recovery warms this many of the hottest keys, through the dependency that
# computes them, at the pace its workers serve.
WARM_KEYS = 20
WARM_DEPENDENCY = "database"

# The cell's static service call graph (routes, the cache, dependencies, shared config).
CALL_GRAPH: dict[str, tuple[str, ...]] = {
    "gateway": ("route:profile", "route:payments", "route:recommendations"),
    "route:profile": ("cache", "dep:database", "store"),
    "route:payments": ("store", "dep:payment_provider"),
    "route:recommendations": ("dep:recommendations",),
    "periodic_jobs": ("dep:recommendations", "shared:shared_config"),
}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(q * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass(frozen=True, slots=True)
class MeterReading:
    """What user requests did since the previous reading."""

    seconds: float
    requests: int  # every user request, refused ones included
    served: int  # admitted and answered
    errors: int  # served with a 5xx
    bytes: int
    p50_ms: float
    p99_ms: float
    unique_users: int


class CellMeter:
    """Records user requests between two readings (event loop only)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since = clock()
        self._latencies: list[float] = []
        self._users: dict[str, float] = {}
        self._requests = 0
        self._served = 0
        self._errors = 0
        self._bytes = 0

    def refused(self, user_id: str) -> None:
        self._requests += 1
        self._users[user_id] = self._clock()

    def observe(
        self, user_id: str, seconds: float, status: int, nbytes: int, *, did_work: bool
    ) -> None:
        self._requests += 1
        self._served += 1
        self._errors += status >= 500
        self._bytes += nbytes
        self._users[user_id] = self._clock()
        if did_work:
            self._latencies.append(seconds)

    def take(self) -> MeterReading:
        """Return the reading since the last call and start a new one."""
        now = self._clock()
        cutoff = now - USERS_WINDOW_SECONDS
        self._users = {u: t for u, t in self._users.items() if t >= cutoff}
        latencies = sorted(self._latencies)
        reading = MeterReading(
            seconds=max(1e-3, now - self._since),
            requests=self._requests,
            served=self._served,
            errors=self._errors,
            bytes=self._bytes,
            p50_ms=percentile(latencies, 0.5) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            unique_users=len(self._users),
        )
        self._since = now
        self._latencies = []
        self._requests = self._served = self._errors = self._bytes = 0
        return reading


class CellControl:
    """One cell's ControlLoop, its inputs and the execution of what it decides.

    It reads the cell's parts (the dependency clients' counters, the profile cache, the
    ingress meter and boundary, the memory model) and acts on them; ``spawn`` runs the
    background work it starts (cancelled when the cell stops).
    """

    def __init__(
        self,
        index: int,
        settings: SystemSettings,
        *,
        clients: DependencyClients,
        profiles: ProfileCache,
        ingress: CellIngress,
        memory: MemoryModel,
        timers: CellTimers,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
        events: EventLog | None = None,
    ) -> None:
        self._index = index
        self._settings = settings
        self._clients = clients
        self._profiles = profiles
        self._ingress = ingress
        self._memory = memory
        self._timers = timers
        self._spawn = spawn
        self._clock = clock
        self.metastable = MetastableDetector(
            60.0,
            MetastableThresholds(p99_ms_above=settings.metastable_p99_ms),
            persistence=METASTABLE_PERSISTENCE,
            clear_after=3,
            clock=clock,
            events=events,
        )
        self.recovery = StagedRecovery(
            step_seconds=settings.recovery_step_seconds,
            pause_seconds=settings.recovery_pause_seconds,
            clock=clock,
            rng=rng,
            events=events,
        )
        self.stampede = StampedeDetector(events=events)
        self.loop = ControlLoop(
            breakers=clients.loop_breakers(),
            shedder=ingress.shedder,
            jitters=[timers.jitter],
            metastable=self.metastable,
            recovery=self.recovery,
            stampede=self.stampede,
            on_alert=self._alert,
            on_reinforce=self._reinforce,
            on_pattern=self._pattern,
            clock=clock,
            events=events,
        )
        # Event loop only.
        self.correlation = 0.0
        self._correlation_at = -math.inf
        self.unhealthy_cells = 0.0
        self.isolation = 1.0
        self.cascade_risk = 0.0
        self._shared: deque[tuple[float, float]] = deque(maxlen=SHARED_WINDOW_TICKS)
        self.alerts: deque[dict[str, Any]] = deque(maxlen=20)
        self.actions: dict[str, int] = {a.value: 0 for a in RecoveryAction}
        self.last_inputs: LoopInputs | None = None
        self.last_report: LoopReport | None = None
        self.errors = 0
        self._prev: dict[str, float] = {}
        self._prev_retry_rate = 0.0

    # ----------------------------------------------------------------- signals
    def set_correlation(self, value: float, unhealthy_cells: float | None = None) -> None:
        """The gateway's latest max pairwise correlation of the cells' self-generated load
        (and, when given, the share of cells that are down)."""
        self.correlation = value
        if unhealthy_cells is not None:
            self.unhealthy_cells = unhealthy_cells
        self._correlation_at = self._clock()

    def signals_fresh(self) -> bool:
        """Whether the gateway's last push is recent."""
        return self._clock() - self._correlation_at <= CORRELATION_TTL_SECONDS

    def fresh_correlation(self) -> float:
        """The gateway's last correlation, or 0 when it is stale."""
        if self._clock() - self._correlation_at > CORRELATION_TTL_SECONDS:
            return 0.0
        return self.correlation

    # ----------------------------------------------------------------- measuring
    def _delta(self, key: str, value: float) -> float:
        previous = self._prev.get(key, 0.0)
        self._prev[key] = value
        return value - previous

    def measure(self) -> LoopInputs:
        """One second of the cell, as the control loop's inputs."""
        clients, cache, memory = self._clients, self._profiles.cache, self._memory
        reading = self._ingress.meter.take()
        seconds = reading.seconds
        attempts = self._delta("attempts", sum(clients.attempts.values()))
        retries = self._delta("retries", sum(clients.retries.values()))
        firsts = {
            name: self._delta(f"first:{name}", clients.first_attempts[name])
            for name in clients.dependencies
        }
        arrivals = self._delta("arrivals", self._ingress.boundary.arrivals)
        foreign = self._delta("foreign", self._ingress.boundary.foreign_arrivals)
        self._shared.append(
            (
                self._delta("shared_calls", clients.shared["attempts"]),
                self._delta("shared_failed", clients.shared["failures"]),
            )
        )
        shared_calls = sum(calls for calls, _ in self._shared)
        shared_failed = sum(failed for _, failed in self._shared)
        self.isolation = isolation_score(foreign, arrivals)
        shared_failing = shared_failed / shared_calls if shared_calls >= SHARED_MIN_CALLS else 0.0
        self.cascade_risk = cascade_risk(1.0 - self.isolation, shared_failing)
        hot_hits = self._delta("hot_hits", cache.hot_hits)
        hot_misses = self._delta("hot_misses", cache.hot_misses)
        retry_rate = retries / attempts if attempts else 0.0
        # Growth from zero is "a lot", capped so it stays a finite, JSON-able number.
        if self._prev_retry_rate > 0:
            growth = min(MAX_GROWTH, retry_rate / self._prev_retry_rate)
        else:
            growth = MAX_GROWTH if retry_rate > 0 else 1.0
        self._prev_retry_rate = retry_rate
        request_rate = reading.requests / seconds
        # The worker pool's occupancy too: a cell whose workers are all busy is loaded, however
        # few requests per second that is (read as "low load", its slow tail would look like
        # a metastable state, and the recovery would pause a merely overloaded cell).
        demand = [
            request_rate / self._settings.cell_request_capacity,
            self._ingress.capacity.take_occupancy(),
        ]
        for name, dep in clients.dependencies.items():
            capacity = dep.settings.concurrency * 1000.0 / dep.settings.service_time_ms
            demand.append(firsts[name] / seconds / capacity)
        first_total = sum(firsts.values())
        hot_lookups = hot_hits + hot_misses
        return LoopInputs(
            load=max(demand),
            p50_ms=reading.p50_ms,
            p99_ms=reading.p99_ms,
            error_rate=reading.errors / reading.served if reading.served else 0.0,
            retry_rate=retry_rate,
            retry_growth=growth,
            correlation=self.fresh_correlation(),
            cache_hit_rate=hot_hits / hot_lookups if hot_lookups else 1.0,
            request_rate=request_rate,
            waiters=self._profiles.coalescing_waiters,
            queue_depth=float(sum(d.waiting for d in clients.dependencies.values())),
            connection_use=max(d.utilization for d in clients.dependencies.values()),
            gc_time=memory.gc_breaker.gc_share(),
            memory_usage=memory.usage,
            unhealthy_cells=self.unhealthy_cells if self.signals_fresh() else 0.0,
            cascade_risk=self.cascade_risk,
            complexity=ComplexityInputs(
                request_rate=request_rate,
                unique_users=float(reading.unique_users),
                data_volume=reading.bytes / seconds,
                retry_amplification=attempts / first_total if first_total else 1.0,
                call_graph=CALL_GRAPH,
            ),
        )

    # ----------------------------------------------------------------- acting
    def tick(self) -> LoopReport:
        """Measure, tick the ControlLoop, carry out what it decided."""
        inputs = self.measure()
        in_emergency = self.stampede.emergency
        report = self.loop.tick(inputs)
        self._profiles.cache.refresh_hot_set()
        for action in report.recovery_actions:
            self.perform(action)
        if self.stampede.emergency and not in_emergency:
            # Stampede emergency: coalesce every miss, serve stale, prewarm the hottest keys.
            self._spawn(self._profiles.prewarm_hottest("stampede emergency"))
        self.last_inputs = inputs
        self.last_report = report
        return report

    def perform(self, action: RecoveryAction) -> None:
        """Carry out one reset step of the staged recovery against the cell."""
        self.actions[action.value] += 1
        clients = self._clients
        if action is RecoveryAction.WARM_CACHES:
            # Warm-up calls must neither queue behind calls whose callers have gone nor be
            # refused by client state that remembers the stuck state's failures (an adaptive
            # throttle that saw nothing accepted rejects nearly everything): drain and reset
            # first, then warm at the pace the database serves.
            clients.drain_queues()
            clients.reset_connections()
            self._spawn(self.warm_caches("metastable recovery"))
        elif action is RecoveryAction.DRAIN_QUEUES:
            clients.drain_queues()
        elif action is RecoveryAction.RESET_CONNECTIONS:
            clients.reset_connections()
        elif action is RecoveryAction.FORCE_GC:
            gc.collect()

    async def warm_caches(self, reason: str) -> int:
        """Recompute the hottest keys not cached, as many at a time as the database serves.

        All at once, most warm-up calls would wait behind each other past their timeout and
        leave dead work in the queue: the very state the recovery is getting out of.
        Returns how many were recomputed.
        """
        cache = self._profiles.cache
        keys = [k for k in cache.hottest(WARM_KEYS) if not cache.is_fresh(k)]
        database = self._clients.dependencies.get(WARM_DEPENDENCY)
        width = database.settings.concurrency if database is not None else len(keys)
        warmed = 0
        for start in range(0, len(keys), max(1, width)):
            warmed += await self._profiles.prewarm(keys[start : start + width], reason)
        return warmed

    async def run(self, sleep: Callable[[float], Any]) -> None:
        while True:
            await sleep(TICK_SECONDS)
            try:
                self.tick()
            except Exception:  # the loop must survive a bad measurement
                self.errors += 1
                logger.exception("cell %s: control loop tick failed", self._index)

    # ----------------------------------------------------------------- callbacks
    def _alert(self, message: str, severity: str) -> None:
        self.alerts.append({"at": time.time(), "severity": severity, "message": message})
        logger.warning("cell %s: %s alert: %s", self._index, severity, message)

    def _reinforce(self, on: bool) -> None:
        """The control loop's "reinforce boundaries": the cell refuses other cells' users."""
        report = self.loop.active()
        why = "phase defenses" if "phase_defenses" in report else "cascade forming"
        reason = (
            f"{why} (cascade risk {self.cascade_risk:.2f}, isolation {self.isolation:.2f})"
            if on
            else f"calm (cascade risk {self.cascade_risk:.2f})"
        )
        self._ingress.boundary.reinforce(on, reason)

    def _pattern(self, pattern: str, on: bool, probability: float) -> None:
        if pattern == "synchronization" and on:
            self._timers.restore(f"synchronization detected (p={probability:.2f})")

    def restart_measurement(self) -> None:
        """Measure from now on: the next tick must not judge what happened before a reset."""
        clients, cache, boundary = self._clients, self._profiles.cache, self._ingress.boundary
        self._ingress.meter.take()
        self._delta("attempts", sum(clients.attempts.values()))
        self._delta("retries", sum(clients.retries.values()))
        for name in clients.dependencies:
            self._delta(f"first:{name}", clients.first_attempts[name])
        self._delta("hot_hits", cache.hot_hits)
        self._delta("hot_misses", cache.hot_misses)
        self._delta("arrivals", boundary.arrivals)
        self._delta("foreign", boundary.foreign_arrivals)
        self._delta("shared_calls", clients.shared["attempts"])
        self._delta("shared_failed", clients.shared["failures"])
        self._prev_retry_rate = 0.0

    def reset(self) -> None:
        self.loop.reset()
        self.recovery.reset()
        self.metastable.reset()
        self.stampede.reset()
        self.correlation = 0.0
        self._correlation_at = -math.inf
        self.unhealthy_cells = 0.0
        self.isolation = 1.0
        self.cascade_risk = 0.0
        self._shared.clear()
        self.restart_measurement()

    def snapshot(self) -> dict[str, Any]:
        inputs = self.last_inputs
        return {
            "loop": self.loop.snapshot(),
            "inputs": None
            if inputs is None
            else {
                "load": inputs.load,
                "p50_ms": inputs.p50_ms,
                "p99_ms": inputs.p99_ms,
                "error_rate": inputs.error_rate,
                "retry_rate": inputs.retry_rate,
                "retry_growth": inputs.retry_growth,
                "correlation": inputs.correlation,
                "cache_hit_rate": inputs.cache_hit_rate,
                "request_rate": inputs.request_rate,
                "waiters": inputs.waiters,
                "queue_depth": inputs.queue_depth,
                "connection_use": inputs.connection_use,
                "gc_time": inputs.gc_time,
                "memory_usage": inputs.memory_usage,
                "unhealthy_cells": inputs.unhealthy_cells,
                "cascade_risk": inputs.cascade_risk,
            },
            "isolation_score": self.isolation,
            "cascade_risk": self.cascade_risk,
            "phase_risk": None if self.last_report is None else self.last_report.phase_risk,
            "correlation": {"value": self.correlation, "fresh": self.fresh_correlation()},
            "recovery_actions": dict(self.actions),
            "alerts": list(self.alerts),
            "errors": self.errors,
        }
