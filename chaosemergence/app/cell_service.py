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

``CellService`` composes the cell's parts, each with one job and its own module:

- ``clients`` (``app/dependency_clients.py``): the calls that leave the cell and their
  defenses (guards, breakers, throttles, retry policies and budgets, attempt counters);
- ``profiles`` (``app/profile_cache.py``): the profile cache and its misses (coalescing,
  XFetch refreshes, precompute jitter, stale fallback, prewarming, their counters);
- ``ingress`` (``app/ingress.py``): boundary, load shedder, worker pool, meter; with the
  control loop's staged recovery and the memory model they make ``admission``;
- ``memory`` (``app/memory.py``): working set, GC pauses, guardrails, predictive restart;
- ``timers`` (``app/cell_timers.py``): periodic jobs and the jitter they draw from;
- ``control`` (``app/control.py``): the per-cell control loop, over the parts above;
- ``enabled``: the defense switches (``app/switches.py`` brings the parts in line).

This class keeps the request path, the lifecycle, and the narrow methods the cell's HTTP
face and the embedding call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from chaosemergence.app.admission import Admission
from chaosemergence.app.capacity import CallerGaveUp, CellOverloaded
from chaosemergence.app.cell_state import cell_state
from chaosemergence.app.cell_timers import CellTimers
from chaosemergence.app.control import CellControl
from chaosemergence.app.dependency import DependencyError
from chaosemergence.app.dependency_clients import DependencyClients
from chaosemergence.app.event_file import EventFile
from chaosemergence.app.faults import FaultTable
from chaosemergence.app.ingress import CellIngress
from chaosemergence.app.memory import MemoryModel
from chaosemergence.app.profile_cache import ProfileCache
from chaosemergence.app.reply import Reply
from chaosemergence.app.settings import SystemSettings
from chaosemergence.app.storage import CellStore
from chaosemergence.app.switches import DEFENSES, apply_switches
from chaosemergence.contract import check_fault
from chaosemergence.defenses import BreakerState, DefenseError, EventLog, MetricsRecorder
from chaosemergence.defenses.metrics import NULL_RECORDER

__all__ = ["DEFENSES", "CellService", "Reply"]

logger = logging.getLogger("chaosemergence.cell")

EVENT_HISTORY = 2000
POPULAR = {"items": ["popular-1", "popular-2", "popular-3"], "degraded": True}


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
        self.settings = settings
        self._clock = clock
        self._on_restart = on_restart
        self._on_oom = on_oom
        self.restart_reason: str | None = None
        self.rng = random.Random(settings.seed * 1000 + index)
        # Every activation is also a counter (emergence_defense_events_total), via the recorder.
        self.events = EventLog(clock=wall_clock, maxlen=EVENT_HISTORY, recorder=recorder)
        # Events of this cell's earlier processes, kept in a file across restarts.
        self.previous_events = self._keep_events(events_file)
        self.faults = FaultTable(clock=clock)
        self.store = CellStore(db_path)
        self.enabled: dict[str, bool] = dict.fromkeys(DEFENSES, True)
        self._background: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.timers = CellTimers(
            index,
            self.enabled,
            removed=jitter_removed,
            rng=self.rng,
            events=self.events,
            clock=clock,
        )
        self.clients = DependencyClients(
            index,
            settings,
            self.faults,
            rng=self.rng,
            events=self.events,
            jitter_active=self.timers.active,
            shared_call=shared_call,
            clock=clock,
        )
        self.profiles = self._profile_cache(clock, sleep)
        self.ingress = CellIngress(index, settings, rng=self.rng, events=self.events, clock=clock)
        self.memory = MemoryModel(
            settings,
            on_oom=self._die,
            on_restart=self.request_restart,
            clock=clock,
            events=self.events,
        )
        self.control = self._control_loop(clock)
        # The ingress decisions, in order: the ingress's boundary, the control loop's staged
        # recovery, the memory model's guardrails, the ingress's shedder.
        self.admission = Admission(
            self.control.recovery, self.memory, self.ingress.shedder, self.ingress.boundary
        )
        self._schedule_jobs(shared_call is not None)
        if switches:
            self.set_switches(switches)

    def _control_loop(self, clock: Callable[[], float]) -> CellControl:
        """The per-cell control loop, over every part built before it."""
        return CellControl(
            self.index,
            self.settings,
            clients=self.clients,
            profiles=self.profiles,
            ingress=self.ingress,
            memory=self.memory,
            timers=self.timers,
            spawn=self.spawn,
            rng=self.rng,
            clock=clock,
            events=self.events,
        )

    def _keep_events(self, events_file: Path | None) -> list[dict[str, Any]]:
        """The events of this cell's earlier processes; this process's go to the same file."""
        if events_file is None:
            return []
        history = EventFile(events_file, EVENT_HISTORY)
        previous = history.load()
        self.events.subscribe(history.append)
        return previous

    def _profile_cache(
        self, clock: Callable[[], float], sleep: Callable[[float], Awaitable[Any]]
    ) -> ProfileCache:
        """The profile cache, reading the control loop's stampede emergency and the gateway's
        correlation as it is asked (the control loop, built after it, reads its counters)."""
        return ProfileCache(
            self.index,
            self.settings,
            self.store,
            self.clients,
            self.enabled,
            emergency=lambda: self.control.stampede.emergency,
            correlation=lambda: self.control.fresh_correlation(),
            spawn=self.spawn,
            rng=self.rng,
            events=self.events,
            clock=clock,
            sleep=sleep,
        )

    def _schedule_jobs(self, shared: bool) -> None:
        settings = self.settings
        self.timers.add_job(
            "refresh_recommendations",
            settings.refresh_interval_seconds,
            self.clients.refresh_model,
        )
        if shared:
            # One poller per configuration namespace, each on its own timer and phase; a
            # failed poll is retried after a short delay until it succeeds.
            for namespace in range(settings.shared_pollers_per_cell):
                self.timers.add_job(
                    f"poll_shared_config[{namespace}]",
                    settings.shared_poll_interval_seconds,
                    self.clients.poll_shared,
                    retry_delay=settings.shared_poll_retry_seconds,
                )

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        for job in self.timers.jobs:
            self._tasks.append(asyncio.create_task(job.run()))
        self._tasks.append(asyncio.create_task(self.control.run(asyncio.sleep)))
        self._tasks.append(asyncio.create_task(self.memory.run()))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.clients.aclose()
        self.store.close()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` in the background (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

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
        ingress = self.ingress
        ingress.requests += 1
        foreign = ingress.boundary.arrive(user_id)
        refusal = self.admission.check(route, foreign=foreign)
        if refusal is not None:
            ingress.meter.refused(user_id)
            body = {"error": refusal.reason, "shed_by": refusal.defense, "cell": self.index}
            return Reply(refusal.status, body, refusal.retry_after)
        started = self._clock()
        deadline = None
        if caller_timeout is not None and self.enabled["load_shedding"]:
            deadline = started + caller_timeout
        self.memory.enter()
        try:
            async with ingress.capacity.slot(deadline):
                # Its GC pause, then its work, delayed by every pause that stops the world.
                reply = await self.memory.run_request(work)
        except CellOverloaded as error:
            reply = Reply(503, {"error": f"cell overloaded: {error}", "cell": self.index}, 1)
        except CallerGaveUp as error:
            # Without this, a queue that outgrew its callers' patience stays full of work
            # nobody reads, and the cell never catches up (the loop behind the cascades).
            ingress.note_dropped()
            ingress.meter.refused(user_id)
            body = {"error": f"dropped: {error}", "shed_by": "load_shedding", "cell": self.index}
            return Reply(503, body, 1)
        finally:
            self.memory.leave()
        ingress.meter.observe(
            user_id,
            self._clock() - started,
            reply.status,
            len(json.dumps(reply.body)),
            did_work=reply.body.get("cache") not in ("hit", "stale"),
        )
        return reply

    async def profile(self, user_id: str, *, caller_timeout: float | None = None) -> Reply:
        return await self.handle(
            "profile", user_id, lambda: self.profiles.serve(user_id), caller_timeout
        )

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
            degraded = await self.clients.call("payment_provider", queue_for_later)
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
            degraded = await self.clients.call("recommendations", popular)
        except (DependencyError, DefenseError) as error:
            return Reply(503, {"error": f"recommendations failed: {error}", "cell": self.index}, 1)
        if degraded:
            return Reply(200, {**degraded, "user_id": user_id, "cell": self.index})
        items = [f"item-{(sum(map(ord, user_id)) * 31 + i) % 997}" for i in range(3)]
        return Reply(
            200, {"items": items, "degraded": False, "user_id": user_id, "cell": self.index}
        )

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
        normalized = check_fault(request, self.clients.dependencies)
        fault = self.faults.add(normalized, fault_id)
        return fault.as_dict(self._clock())

    async def invalidate_cache(self) -> dict[str, Any]:
        """Drop the whole cache; the hottest keys start prewarming in the background."""
        return await self.profiles.invalidate()

    def set_jitter(self, enabled: bool) -> None:
        self.timers.set_jitter(enabled)

    def set_defenses(self, enabled: bool, names: list[str] | None) -> list[str]:
        chosen = list(DEFENSES) if names is None else names
        unknown = [n for n in chosen if n not in DEFENSES]
        if unknown:
            raise ValueError(f"names: unknown defense(s) {unknown}; known: {', '.join(DEFENSES)}")
        self.set_switches(dict.fromkeys(chosen, enabled))
        return chosen

    def set_switches(self, switches: dict[str, bool]) -> None:
        """Switch defenses on or off and bring every defense object in line."""
        apply_switches(
            self.enabled,
            switches,
            clients=self.clients,
            profiles=self.profiles,
            ingress=self.ingress,
            timers=self.timers,
            memory=self.memory,
            control=self.control,
        )

    async def reset_own(self) -> dict[str, Any]:
        """The cell's own part of a reset, after the embedding cleared the faults and put every
        defense and the jitter back (``EmergenceAdmin.reset``): the defenses' state, the
        ingress, the memory ballast and queues back to normal, the cache warm."""
        self.timers.restored_by = None
        self.clients.reset_breakers()
        self.ingress.boundary.reset()
        self.clients.reset_throttles_and_retries()
        self.ingress.shedder.reset()
        self.timers.jitter.reset()
        self.control.reset()
        released = self.memory.clear()
        drained = self.clients.drain_queues()
        prewarmed = await self.profiles.prewarm_hottest("reset")
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
        return cell_state(
            self.index,
            self.enabled,
            self.faults,
            clients=self.clients,
            profiles=self.profiles,
            ingress=self.ingress,
            admission=self.admission,
            timers=self.timers,
            memory=self.memory,
            control=self.control,
            restart_requested=self.restart_reason,
        )

    def breaker_states(self) -> dict[str, BreakerState]:
        return self.clients.breaker_states()
