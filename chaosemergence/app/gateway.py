"""The gateway: routes each user to one cell by consistent hash, and hosts the admin API.

It is deliberately thin. A dead or failing cell is not failed over (that is how cascades
start): its users get 503 with Retry-After and every other cell is untouched. Calls to a
cell go through that cell's circuit breaker (`circuit_breaker`): a cell that stops
answering (timeouts, refused connections) is no longer waited on, and its users get 503 at
once until a half-open probe finds it answering again. A cell's own 5xx answers are not
failures to it: the cell answered, and chose. Admin calls are validated once here, then
fanned out to the live cells.

Two listeners, two event loops (docs/trust.md). The data plane (users' requests, the
shared dependency the cells call, /metrics) runs on the main thread's loop. The admin API
runs on its own listener, served by its own thread and event loop (``AdminServer``) with
its own HTTP client, so that a data plane saturated by the collapse an experiment provokes
cannot delay a probe or a rollback: the admin API never waits on the data plane's loop.
What that loop owns (the gateway's breakers and retry budget) the admin API changes by
handing the change to the loop (``DataPlaneHandoff``; it takes effect before the next
request the loop handles) and reads through a snapshot the loop publishes four times a
second; the shared dependency's faults and series, the event log and the acknowledged
payments are guarded by locks held only for a copy. The data-plane listener still answers
/admin and /dashboard, by relaying them to the admin listener (for browsers and clients
that only know the main URL); the extension talks to the admin listener directly.

Loops: on the admin loop the metric window (1 s) and the supervisor's monitor (a cell that
exited to be restarted comes back on its socket; 0.1 s); on the data-plane loop the
synchronization loop (1 s: the cells' correlation on the shared dependency it hosts, pushed
to every cell), the lost-write watch, and the snapshot it publishes for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chaosemergence.app.auth import AdminAuthMiddleware, BodyLimitMiddleware, json_errors
from chaosemergence.app.cell_app import json_body
from chaosemergence.app.cell_client import CellAnswer, CellClient, CellError, CellUnreachable
from chaosemergence.app.dashboard import dashboard_routes
from chaosemergence.app.lease import Lease
from chaosemergence.app.metrics import BREAKER_STATE_VALUES, GatewayMetrics
from chaosemergence.app.process import process_figures
from chaosemergence.app.routing import Routing
from chaosemergence.app.storage import missing_in_file
from chaosemergence.app.supervisor import Supervisor
from chaosemergence.app.switches import ALL_DEFENSES, DEFENSES
from chaosemergence.app.sync import SHARED_DEPENDENCY, SharedDependencyHost
from chaosemergence.app.window import MetricWindow
from chaosemergence.contract import (
    MAX_BODY_BYTES,
    MAX_CORRELATION_WINDOW_SECONDS,
    AdminContract,
    InvalidField,
    check,
    check_lease_seconds,
    check_pressure,
)
from chaosemergence.defenses import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    EventLog,
    RetryBudget,
)
from chaosemergence.observe.lost_writes import CHECK_SECONDS, LostWriteWatch

__all__ = ["DataPlaneHandoff", "Gateway", "create_gateway"]

logger = logging.getLogger("chaosemergence.gateway")

# Every admin call the gateway fans out to a cell gets this long: the admin API answers
# within a second at any load, a cell that did not answer in time is named in the answer.
ADMIN_FANOUT_TIMEOUT = 0.8
# Relaying /admin from the data-plane listener to the admin listener (a reset that restarts
# dead cells waits for them to be ready: up to 30 s).
ADMIN_RELAY_TIMEOUT = 40.0
# How often the data plane publishes what the admin API reads of its state.
PUBLISH_SECONDS = 0.25
# How often the admin loop looks at the lease (and retries a restore cells missed).
LEASE_CHECK_SECONDS = 0.25
SIGNAL_TIMEOUT = 1.0
ROUTES = ("profile", "payments", "recommendations")
# The gateway's retry budget when defenses are on: retries at most 10% of requests (plus a
# floor of one per second), as the cells' own budgets allow.
GATEWAY_RETRY_RATIO = 0.1
# Containment is recorded once per cell per burst, not per request.
CONTAINMENT_NOTE_SECONDS = 5.0
# The gateway -> cell breakers: half of at least 5 calls in 5 s failed (docs/defenses.md).
GATEWAY_BREAKER_WINDOW_SECONDS = 5.0
GATEWAY_BREAKER_MINIMUM_CALLS = 5
MONITOR_SECONDS = 0.1
SYNC_SECONDS = 1.0
# A breaker trip: entering one of these states.
TRIP_STATES = (BreakerState.OPEN, BreakerState.EMERGENCY)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel a lifespan's periodic tasks and wait until each has stopped."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _every(seconds: float, work: Callable[[], Awaitable[None] | None], name: str) -> None:
    """Run ``work`` every ``seconds`` until cancelled; a failure is logged, not fatal."""
    while True:
        try:
            result = work()
            if result is not None:
                await result
        except Exception:
            logger.exception("gateway loop %s failed", name)
        await asyncio.sleep(seconds)


def _bad_request(error: ValueError | str) -> JSONResponse:
    """400 naming the field (``InvalidField``; a body that is not JSON names ``body``)."""
    field = error.field if isinstance(error, InvalidField) else "body"
    return JSONResponse({"error": str(error), "field": field}, status_code=400)


class DataPlaneHandoff:
    """Runs changes to what the data-plane loop owns on that loop, without waiting for it.

    ``run(fn)`` hands ``fn`` to the loop (``call_soon_threadsafe``): it runs before any
    request the loop handles after it, so it is as good as applied for the traffic, and the
    caller (the admin API's thread) never blocks on a loop that may be saturated. Before the
    loop runs, or after it stopped, there is no concurrent user and ``fn`` runs at once.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handed_off = 0  # changes run on the loop (read by tests)

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def run(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(fn)
                self.handed_off += 1
                return
            except RuntimeError:  # closed meanwhile: no one else touches the objects now
                pass
        fn()


@dataclass
class Gateway:
    """The gateway's two ASGI apps: the data plane and the admin API (docs/trust.md)."""

    data_app: Starlette
    admin_app: Starlette
    handoff: DataPlaneHandoff
    # Where the admin listener is, once bound (the data plane relays /admin there).
    admin_url: list[str] = field(default_factory=list)


def create_gateway(
    supervisor: Supervisor, token: str, *, registry: CollectorRegistry | None = None
) -> Gateway:
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    window = MetricWindow(registry)
    settings = supervisor.settings
    # The admin API's contract: what the handlers check, and the document they publish.
    contract = AdminContract(
        settings.cells, settings.dependencies, SHARED_DEPENDENCY, MAX_CORRELATION_WINDOW_SECONDS
    )
    document = contract.document(ALL_DEFENSES)
    routing = Routing(settings.cells)
    fault_ids = itertools.count(1)
    shared = SharedDependencyHost(settings, rng=random.Random(settings.seed * 1000 + 999))
    # Event-loop state: the gateway's retry layer (the same layer in both modes; the budget
    # governs it while the retry_budget defense is on) and the acknowledged-payment ledger.
    # The gateway's own defense events (its retry budget, cellular containment), merged into
    # /admin/events under the cell "gateway".
    gateway_events = EventLog()
    retry_budget = RetryBudget(ratio=GATEWAY_RETRY_RATIO, events=gateway_events)
    contained_noted: dict[int, float] = {}

    def note_containment(cell: int) -> None:
        """Cellular routing kept a failing cell's users there instead of failing over."""
        now = time.monotonic()
        if now - contained_noted.get(cell, -CONTAINMENT_NOTE_SECONDS) >= CONTAINMENT_NOTE_SECONDS:
            gateway_events.record(
                "cellular_routing",
                "activated",
                f"contained cell {cell}'s failure: its users were not failed over to other cells",
                cell=cell,
            )
        contained_noted[cell] = now

    # One breaker per cell, in front of the gateway -> cell hop (the seed's "circuit breakers
    # on all service boundaries"); a trip is also its own event and counter.
    def on_cell_breaker(
        breaker: CircuitBreaker, old: BreakerState, new: BreakerState, reason: str
    ) -> None:
        cell = breaker.name.removeprefix("gateway.cell")
        metrics.breaker_state.labels(cell).set(BREAKER_STATE_VALUES[new.value])
        if new in TRIP_STATES:
            metrics.breaker_trips.labels(cell, new.value).inc()
            gateway_events.record(
                "breaker_trip",
                "activated",
                f"{breaker.name} tripped {old.value} -> {new.value}: {reason}",
                breaker=breaker.name,
                boundary=f"cell{cell}",
                state=new.value,
                previous=old.value,
            )

    cell_breakers = [
        CircuitBreaker(
            f"gateway.cell{i}",
            # A failure rate over a short window, not 5 in a row: a busy cell's brief stall
            # (a few timeouts among hundreds of answers) must not cut all its users off for
            # the open duration; a hung or dead cell fails every call and trips within 5.
            BreakerConfig(
                failure_threshold=0,
                window_seconds=GATEWAY_BREAKER_WINDOW_SECONDS,
                minimum_calls=GATEWAY_BREAKER_MINIMUM_CALLS,
                slow_call_seconds=settings.cell_timeout_seconds,
            ),
            events=gateway_events,
            listeners=(on_cell_breaker,),
        )
        for i in range(settings.cells)
    ]
    for index in range(settings.cells):
        metrics.breaker_state.labels(str(index)).set(0)
    # Written by the data plane, copied by the admin API: guarded by acknowledged_lock.
    acknowledged: dict[int, set[str]] = {i: set() for i in range(settings.cells)}
    acknowledged_lock = threading.Lock()
    lost_watch = LostWriteWatch(acknowledged)
    for index in range(settings.cells):
        metrics.writes_lost.labels(str(index)).set(0)
    started_at = time.time()
    headers = {"Authorization": f"Bearer {token}"}
    # Users' requests go to the cells through `cells_client` (the hot path: aiohttp,
    # app/cell_client.py). The data plane's signal pushes and admin relay use `client`, the
    # admin API its own `admin_client` (its thread's loop): a client belongs to one loop, and
    # the admin API must not queue behind users' requests in a shared pool.
    cells_client = CellClient(settings.cell_timeout_seconds)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.cell_timeout_seconds, connect=1.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
    )
    admin_client = httpx.AsyncClient(
        timeout=httpx.Timeout(ADMIN_FANOUT_TIMEOUT, connect=ADMIN_FANOUT_TIMEOUT),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
    )
    handoff = DataPlaneHandoff()
    defenses_schema = contract.defenses_schema(ALL_DEFENSES)
    gateway = Gateway(Starlette(), Starlette(), handoff)
    # What the admin API last set of the gateway's own switches (admin thread; the data plane
    # gets each change through the handoff) and what the data plane last published.
    switches_lock = threading.Lock()
    gateway_switches = {"cellular_routing": True, "retry_budget": True, "circuit_breaker": True}
    # published[0] is replaced whole by the data plane, read once by the admin API.
    published: list[dict[str, Any]] = [
        {
            "at": None,
            "retry_budget": None,
            "breakers": None,
            "cellular_routing": None,
            "tasks": None,
        }
    ]
    stall_seconds = settings.gateway_stall_ms / 1000
    # The lease on what the tool weakened (admin loop only; app/lease.py). `pending`: the
    # lease expired and some live cell has not yet acknowledged being put back.
    lease = Lease()
    lease_restore = {"pending": False}

    def weakened() -> bool:
        """Is any defense switched off, or the jitter removed, by the admin API?"""
        with switches_lock:
            gateway_off = not all(gateway_switches.values())
        return bool(supervisor.desired_switches or supervisor.desired_jitter_removed or gateway_off)

    def hold_lease(seconds: float) -> dict[str, Any]:
        """After a switch: hold the lease while something is weakened, else release it."""
        lease_restore["pending"] = False  # a new instruction supersedes a pending restore
        if weakened():
            lease.take(seconds)
        else:
            lease.release()
        return lease.view()

    def publish() -> None:
        """Data plane: what the admin API may read of the loop's state (one reference swap)."""
        published[0] = {
            "at": time.time(),
            "retry_budget": retry_budget.snapshot(),
            "breakers": {str(i): b.snapshot() for i, b in enumerate(cell_breakers)},
            "cellular_routing": routing.cellular,
            "tasks": len(asyncio.all_tasks()),
        }

    def apply_switches(names: list[str] | None, enabled: bool) -> None:
        """Data plane: set the gateway's own defenses (runs on its loop, via the handoff)."""
        if names is None or "cellular_routing" in names:
            routing.cellular = enabled
        if names is None or "retry_budget" in names:
            retry_budget.enabled = enabled
        if names is None or "circuit_breaker" in names:
            for breaker in cell_breakers:
                breaker.enabled = enabled
        publish()

    def reset_data_plane() -> None:
        """Data plane: every gateway defense on, its breakers and retry budget forgotten."""
        retry_budget.enabled = True
        retry_budget.reset()
        for breaker in cell_breakers:
            breaker.enabled = True
            breaker.reset()
        routing.cellular = True
        publish()

    async def forward(request: Request, route: str) -> Response:
        if stall_seconds:
            # TEST ONLY (gateway_stall_ms): hold the loop as a saturated one is held.
            until = time.perf_counter() + stall_seconds
            while time.perf_counter() < until:
                pass
        user_id = request.path_params["user_id"]
        home = routing.home(user_id)
        body = await request.body()
        started = time.perf_counter()
        status, content, retry_after = 503, b"", "1"
        content_type = request.headers.get("content-type")
        # Cellular: the home cell only, retried in place. Shared mode (cellular_routing off):
        # fail over through every live instance. Either way, with the retry budget on, a retry
        # is sent only while the budget allows it.
        tries = routing.candidates(user_id, lambda c: supervisor.cells[c].available)
        if len(tries) == 1:
            tries = tries * settings.gateway_retry_attempts
        retry_budget.record_request()
        cell = home
        for attempt, cell in enumerate(tries):
            target = supervisor.cells[cell]
            if attempt:
                if not retry_budget.can_retry():
                    metrics.gateway_retries_refused.inc()
                    break
                metrics.gateway_retries.inc()
            if not target.available:
                # The supervisor holds the cell's socket: don't queue on a dead process.
                # (A cell restarting on its own is available: its backlog holds the request.)
                content = f'{{"error": "cell {cell} is down"}}'.encode()
                continue
            url = f"{target.url}/users/{user_id}/{route}"

            async def send(url: str = url) -> CellAnswer:
                try:
                    return await cells_client.send(request.method, url, body, content_type)
                except CellUnreachable:
                    # A draining cell closed this kept-alive connection (or its socket
                    # refused): the request never reached it. Send it once more (the next
                    # process takes it).
                    metrics.reconnects.inc()
                    return await cells_client.send(request.method, url, body, content_type)

            try:
                # The cell's breaker: only a cell that does not answer is a failure to it.
                answer = await cell_breakers[cell].call(send)
                status, content = answer.status, answer.content
                retry_after = answer.retry_after or "1"
            except CircuitOpenError as error:
                status = 503
                content = f'{{"error": "cell {cell} circuit open"}}'.encode()
                retry_after = str(max(1, math.ceil(error.retry_after)))
                metrics.breaker_rejections.labels(str(cell)).inc()
                if all(c == cell for c in tries[attempt + 1 :]):
                    break  # retrying in place would only be rejected again
                continue
            except CellError as error:
                status = 503
                content = f'{{"error": "cell {cell} unavailable: {error.kind}"}}'.encode()
            if status < 500:
                break
        elapsed = time.perf_counter() - started
        if status >= 500 and routing.cellular and settings.cells > 1:
            note_containment(home)
        # 429: the cell's load shedder dropped low-priority work on purpose ("shed").
        outcome = "failure" if status >= 500 else "shed" if status == 429 else "success"
        # Counted against the user's home cell: "users of cell k" is what failure radius means.
        metrics.requests.labels(route, str(home), outcome).inc()
        metrics.latency.labels(route).observe(elapsed)
        if route == "payments":
            key = _acknowledged_key(content)
            if key:
                with acknowledged_lock:
                    acknowledged[cell].add(key)
        extra = {"Retry-After": retry_after} if status in (429, 503) else {}
        return Response(content, status_code=status, media_type="application/json", headers=extra)

    async def shared_call(request: Request) -> Response:
        cell = request.path_params["cell"]
        if not 0 <= cell < settings.cells:
            return _bad_request(f"cell must be an index in 0..{settings.cells - 1}, got {cell}")
        status, answer = await shared.call(cell)
        metrics.shared_calls.labels(str(cell), answer["result"]).inc()
        return JSONResponse(answer, status_code=status)

    async def config_read(request: Request) -> Response:
        """A user's read of the shared configuration, served by the gateway's shared host."""
        home = routing.home(request.path_params["user_id"])
        started = time.perf_counter()
        status, answer = await shared.read()
        outcome = "failure" if status >= 500 else "success"
        metrics.requests.labels("config", str(home), outcome).inc()
        metrics.latency.labels("config").observe(time.perf_counter() - started)
        extra = {"Retry-After": "1"} if status == 503 else {}
        return JSONResponse(answer, status_code=status, headers=extra)

    async def profile(request: Request) -> Response:
        return await forward(request, "profile")

    async def payments(request: Request) -> Response:
        return await forward(request, "payments")

    async def recommendations(request: Request) -> Response:
        return await forward(request, "recommendations")

    async def fan_out(
        method: str,
        path: str,
        cells: list[int] | None = None,
        *,
        via: httpx.AsyncClient = admin_client,
        **kwargs: Any,
    ) -> dict[int, Any]:
        """Send one admin call to the chosen live cells; per-cell answers (or errors).

        ``via`` is the admin API's client unless the data plane calls (the lost-write watch).
        """
        chosen = range(settings.cells) if cells is None else cells

        async def one(index: int) -> tuple[int, Any]:
            cell = supervisor.cells[index]
            if not cell.alive:
                return index, {"error": "cell is down"}
            try:
                answer = await via.request(
                    method,
                    f"{cell.url}{path}",
                    headers=headers,
                    timeout=ADMIN_FANOUT_TIMEOUT,
                    **kwargs,
                )
                return index, answer.json()
            except httpx.TimeoutException:
                return index, {"error": f"cell did not answer within {ADMIN_FANOUT_TIMEOUT} s"}
            except (httpx.HTTPError, ValueError) as error:
                return index, {"error": f"{type(error).__name__}: {error}"}

        return dict(await asyncio.gather(*(one(i) for i in chosen)))

    async def add_fault(request: Request) -> Response:
        try:
            # Every field (every cell index included) is checked before anything is applied.
            normalized, cells = contract.check_fault(await json_body(request))
        except ValueError as error:
            return _bad_request(error)
        fault_id = f"fault-{next(fault_ids)}"
        if normalized["dependency"] == SHARED_DEPENDENCY:
            # The shared dependency lives here: every cell that calls it sees the fault.
            shared.faults.add(normalized, fault_id)
            return JSONResponse(
                {
                    "id": fault_id,
                    **normalized,
                    "cells": [],
                    "target": "gateway",
                    "skipped": {},
                    "expires_at": time.time() + normalized["duration"],
                },
                status_code=201,
            )
        results = await fan_out("POST", "/admin/faults", cells, json={**normalized, "id": fault_id})
        applied = [i for i, r in results.items() if "error" not in r]
        # Until it expires or is cleared, a restarted process of a targeted cell (one that was
        # down now included) starts with what is left of it.
        supervisor.keep_fault(fault_id, cells, normalized)
        return JSONResponse(
            {
                "id": fault_id,
                **normalized,
                "cells": applied,
                "skipped": {str(i): r["error"] for i, r in results.items() if "error" in r},
                "expires_at": time.time() + normalized["duration"],
            },
            status_code=201,
        )

    async def clear_faults(request: Request) -> Response:
        fault_id = request.query_params.get("id")
        if fault_id is not None:
            try:
                contract.check_id(fault_id)
            except ValueError as error:
                return _bad_request(error)
        params = {"id": fault_id} if fault_id else None
        supervisor.forget_faults(fault_id or None, memory=False)
        results = await fan_out("DELETE", "/admin/faults", params=params)
        cleared = shared.faults.clear(fault_id)
        return JSONResponse(
            {"cleared": cleared + sum(r.get("cleared", 0) for r in results.values())}
        )

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "POST":
            return await add_fault(request)
        return await clear_faults(request)

    async def invalidate(_: Request) -> Response:
        results = await fan_out("POST", "/admin/cache/invalidate")
        return JSONResponse({"cells": {str(i): r for i, r in results.items()}})

    async def jitter(request: Request) -> Response:
        try:
            body = check(contract.switch, await json_body(request))
            seconds = check_lease_seconds(body.get("lease_seconds"), settings.lease_seconds)
        except ValueError as error:
            return _bad_request(error)
        supervisor.desired_jitter_removed = not body["enabled"]
        held = hold_lease(seconds)
        results = await fan_out("POST", "/admin/jitter", json={"enabled": body["enabled"]})
        return JSONResponse({"cells": {str(i): r for i, r in results.items()}, "lease": held})

    async def defenses(request: Request) -> Response:
        try:
            body = check(defenses_schema, await json_body(request))
            enabled, names = body["enabled"], body.get("names")
            seconds = check_lease_seconds(body.get("lease_seconds"), settings.lease_seconds)
        except ValueError as error:
            return _bad_request(error)
        with switches_lock:
            for name in gateway_switches:
                if names is None or name in names:
                    gateway_switches[name] = enabled
        handoff.run(lambda: apply_switches(names, enabled))
        # A cell restarted on its own comes back with the switches it was last given.
        for name in [n for n in names or DEFENSES if n in DEFENSES]:
            if enabled:
                supervisor.desired_switches.pop(name, None)
            else:
                supervisor.desired_switches[name] = False
        held = hold_lease(seconds)
        cell_names = None if names is None else [n for n in names if n in DEFENSES]
        results = (
            await fan_out("POST", "/admin/defenses", json={"enabled": enabled, "names": cell_names})
            if cell_names is None or cell_names
            else {}
        )
        return JSONResponse(
            {
                "enabled": enabled,
                "names": names or list(ALL_DEFENSES),
                "cells": {str(i): r for i, r in results.items()},
                "lease": held,
            }
        )

    async def restore_defended() -> bool:
        """Every defense on and the jitter back, everywhere; False if a live cell missed it."""
        supervisor.desired_switches.clear()
        supervisor.desired_jitter_removed = False
        with switches_lock:
            gateway_switches.update(dict.fromkeys(gateway_switches, True))
        handoff.run(lambda: apply_switches(None, True))
        on = await fan_out("POST", "/admin/defenses", json={"enabled": True, "names": None})
        back = await fan_out("POST", "/admin/jitter", json={"enabled": True})
        missed = [
            i
            for i in range(settings.cells)
            if supervisor.cells[i].alive and ("error" in on[i] or "error" in back[i])
        ]
        return not missed

    async def lease_tick() -> None:
        """Admin loop: an expired lease puts every defense back on (retried until it holds)."""
        if lease.expired():
            lease.release()
            lease.expirations += 1
            lease_restore["pending"] = True
            gateway_events.record(
                "lease",
                "activated",
                "the lease on weakened defenses expired unrenewed: every defense back on, "
                "jitter restored",
            )
            logger.warning("lease expired: putting every defense back on, jitter back")
        if lease_restore["pending"]:
            lease_restore["pending"] = not await restore_defended()

    async def lease_endpoint(request: Request) -> Response:
        """GET: the lease; POST {"seconds": s}: renew it (a no-op when nothing is held)."""
        if request.method == "POST":
            try:
                body = check(contract.renewal, await json_body(request))
                seconds = check_lease_seconds(
                    body.get("seconds"), settings.lease_seconds, "seconds"
                )
            except ValueError as error:
                return _bad_request(error)
            lease.renew(seconds)
        return JSONResponse(lease.view())

    async def kill_cell(request: Request) -> Response:
        try:
            index = contract.check_index(request.path_params["index"])
        except ValueError as error:
            return _bad_request(error)
        if supervisor.cells[index].remote_url is not None:
            return JSONResponse(
                {
                    "error": f"cell {index} runs elsewhere ({supervisor.cells[index].url}): "
                    "stop it where it runs"
                },
                status_code=409,
            )
        killed = await asyncio.to_thread(supervisor.kill, index)
        return JSONResponse({"cell": index, "killed": killed})

    async def restart_cells(_: Request) -> Response:
        restarted = await asyncio.to_thread(supervisor.restart_dead)
        return JSONResponse({"restarted": restarted})

    async def memory_pressure(request: Request) -> Response:
        try:
            index = contract.check_index(request.path_params["index"])
            rate, duration = check_pressure(await json_body(request))
        except ValueError as error:
            return _bad_request(error)
        if not supervisor.cells[index].alive:
            return JSONResponse({"error": f"cell {index} is down"}, status_code=409)
        body = {"megabytes_per_second": rate, "duration": duration}
        answer = (await fan_out("POST", "/admin/memory-pressure", [index], json=body))[index]
        if "error" in answer:
            return JSONResponse({"cell": index, **answer}, status_code=502)
        # The leak outlives a restart of the cell's process until it expires (or a reset).
        supervisor.keep_memory_pressure(index, rate, duration)
        return JSONResponse({**answer, "expires_at": time.time() + duration}, status_code=201)

    async def reset(_: Request) -> Response:
        # Before anything else: a restarted cell must come back with every defense on.
        supervisor.desired_switches.clear()
        supervisor.desired_jitter_removed = False
        supervisor.forget_faults()
        lease.release()
        lease_restore["pending"] = False
        with switches_lock:
            gateway_switches.update(dict.fromkeys(gateway_switches, True))
        handoff.run(reset_data_plane)
        shared.reset()
        restarted = await asyncio.to_thread(supervisor.restart_dead)
        results = await fan_out("POST", "/admin/reset")
        return JSONResponse(
            {"restarted": restarted, "cells": {str(i): r for i, r in results.items()}}
        )

    async def correlation(request: Request) -> Response:
        try:
            seconds = contract.check_query_number(
                request.query_params.get("window"), "window", contract.window, 30.0
            )
        except ValueError as error:
            return _bad_request(error)
        buckets, series = shared.snapshot_series(seconds)
        # Pairwise correlations over a long window take a while: off the event loop.
        return JSONResponse(await asyncio.to_thread(shared.reading, buckets, series))

    async def metastable(_: Request) -> Response:
        results = await fan_out("GET", "/admin/metastable")
        conditions = {
            str(i): (r.get("condition") if isinstance(r, dict) else None)
            for i, r in sorted(results.items())
        }
        recovery = {
            str(i): (r.get("recovery") or {}).get("phase") if isinstance(r, dict) else None
            for i, r in sorted(results.items())
        }
        return JSONResponse(
            {
                "metastable": any(c is not None for c in conditions.values()),
                "cells": conditions,
                "recovery": recovery,
                # Cells whose recovery gave up and holds ingress for an operator.
                "manual_intervention": [int(i) for i, p in recovery.items() if p == "manual"],
            }
        )

    async def resume_recovery(request: Request) -> Response:
        """An operator's answer to cells whose recovery asked for manual intervention."""
        try:
            body = check(contract.resume, await json_body(request))
            cells = contract.check_cells(body.get("cells"))
            reason = body.get("reason", "resumed by an operator (admin API)")
        except ValueError as error:
            return _bad_request(error)
        results = await fan_out("POST", "/admin/metastable/resume", cells, json={"reason": reason})
        resumed = [
            i for i, r in sorted(results.items()) if isinstance(r, dict) and r.get("resumed")
        ]
        return JSONResponse(
            {"resumed": resumed, "cells": {str(i): r for i, r in sorted(results.items())}}
        )

    async def state(_: Request) -> Response:
        results = await fan_out("GET", "/admin/state")
        with switches_lock:
            switched = dict(gateway_switches)
        # The data plane's published snapshot, with the switches as the admin API last set
        # them (a change handed to a busy loop is already what its next request sees).
        snapshot = published[0]
        budget = dict(snapshot["retry_budget"] or {})
        budget["enabled"] = switched["retry_budget"]
        breakers = {
            i: {**b, "enabled": switched["circuit_breaker"]}
            for i, b in (snapshot["breakers"] or {}).items()
        }
        at = snapshot["at"]
        return JSONResponse(
            {
                "started_at": started_at,
                "gateway": {
                    "retry_budget": budget,
                    "breakers": breakers,
                    # What the data plane itself last published (its switches as applied).
                    "data_plane": {
                        "age_seconds": None if at is None else max(0.0, time.time() - at),
                        "cellular_routing": snapshot["cellular_routing"],
                        "retry_budget": (snapshot["retry_budget"] or {}).get("enabled"),
                        "circuit_breaker": [
                            b.get("enabled") for b in (snapshot["breakers"] or {}).values()
                        ],
                    },
                    "cellular_routing": switched["cellular_routing"],
                    "lease": lease.view(),
                    "cells": settings.cells,
                    "shared_dependency": shared.state(),
                    "desired": {
                        "switches": dict(supervisor.desired_switches),
                        "jitter_removed": supervisor.desired_jitter_removed,
                    },
                },
                "cells": [
                    {
                        "index": c.index,
                        "url": c.url,
                        "alive": c.alive,
                        "restarting": c.restarting,
                        "restarts": c.restarts,
                        "planned_restarts": c.planned_restarts,
                        "last_exit": c.last_exit.as_dict() if c.last_exit else None,
                        "state": results.get(c.index),
                    }
                    for c in supervisor.cells
                ],
            }
        )

    async def events(request: Request) -> Response:
        try:
            after = contract.check_query_number(
                request.query_params.get("since"), "since", contract.since, 0.0
            )
        except ValueError as error:
            return _bad_request(error)
        results = await fan_out("GET", "/admin/events", params={"since": after})
        merged: list[dict[str, Any]] = [
            {**event, "cell": index}
            for index, answer in results.items()
            if isinstance(answer, list)
            for event in answer
        ]
        merged += [{**e.as_dict(), "cell": "gateway"} for e in gateway_events.since(after)]
        merged.sort(key=lambda e: e["at"])
        # Cells whose events are missing from this answer (down, or no answer in time).
        unanswered = {str(i): a["error"] for i, a in results.items() if isinstance(a, dict)}
        return JSONResponse({"started_at": started_at, "events": merged, "unanswered": unanswered})

    async def increase(request: Request) -> Response:
        try:
            seconds = contract.check_query_number(
                request.query_params.get("seconds"), "seconds", contract.seconds, 30.0
            )
        except ValueError as error:
            return _bad_request(error)
        results = await fan_out("GET", "/admin/increase", params={"seconds": seconds})
        samples = window.increase(seconds)
        for answer in results.values():
            if isinstance(answer, list):
                samples.extend(answer)
        unanswered = {str(i): a["error"] for i, a in results.items() if isinstance(a, dict)}
        return JSONResponse({"seconds": seconds, "samples": samples, "unanswered": unanswered})

    async def lost_writes(_: Request) -> Response:
        per_cell: dict[str, Any] = {}
        total = 0
        with acknowledged_lock:
            copied = {index: set(keys) for index, keys in acknowledged.items()}
        for index, keys in copied.items():
            if not keys:
                continue
            if supervisor.cells[index].alive:
                answer = (
                    await fan_out(
                        "POST", "/admin/payments/missing", [index], json={"keys": sorted(keys)}
                    )
                )[index]
            else:  # a dead cell's database file is still there: read it directly
                db = supervisor.run_dir / f"cell-{index}.sqlite3"
                answer = {"missing": await asyncio.to_thread(missing_in_file, db, sorted(keys))}
            if "error" in answer:
                per_cell[str(index)] = answer
                continue
            per_cell[str(index)] = {"acknowledged": len(keys), "missing": len(answer["missing"])}
            total += len(answer["missing"])
        return JSONResponse({"lost_writes": total, "cells": per_cell})

    async def missing_keys(index: int, keys: list[str]) -> list[str] | None:
        """The keys among `keys` cell `index`'s database lacks (None: it did not answer)."""
        if supervisor.cells[index].alive:
            answer = (
                await fan_out(
                    "POST", "/admin/payments/missing", [index], via=client, json={"keys": keys}
                )
            )[index]
        else:  # a dead cell's database file is still there: read it directly
            db = supervisor.run_dir / f"cell-{index}.sqlite3"
            answer = {"missing": await asyncio.to_thread(missing_in_file, db, keys)}
        found = answer.get("missing") if isinstance(answer, dict) else None
        return [str(k) for k in found] if isinstance(found, list) else None

    async def watch_lost_writes() -> None:
        for index, lost in (await lost_watch.check(missing_keys)).items():
            metrics.writes_lost.labels(str(index)).set(lost)

    async def openapi(_: Request) -> Response:
        """The admin API's OpenAPI document (the contract: what the handlers check)."""
        return JSONResponse(document)

    async def process(_: Request) -> Response:
        """Each process's resident memory, descriptors, threads and asyncio tasks."""
        results = await fan_out("GET", "/admin/process")
        gateway_figures = await asyncio.to_thread(process_figures)
        gateway_figures["tasks"] = {
            "admin": len(asyncio.all_tasks()),
            "data_plane": published[0].get("tasks"),
        }
        return JSONResponse(
            {
                "gateway": gateway_figures,
                "cells": {str(i): r for i, r in sorted(results.items())},
            }
        )

    async def health(_: Request) -> Response:
        alive = sum(1 for c in supervisor.cells if c.alive)
        return JSONResponse({"status": "ok", "cells": settings.cells, "alive": alive})

    async def metrics_endpoint(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def targets(_: Request) -> Response:
        # Prometheus file_sd / http_sd format: every process's /metrics.
        urls = [f"{settings.host}:{settings.port}"] + [
            c.url.removeprefix("http://") for c in supervisor.cells
        ]
        return JSONResponse([{"targets": urls, "labels": {"job": "chaosemergence"}}])

    def monitor() -> None:
        """Reap exited cells (restarting those that asked for it); publish who is up."""
        for ended in supervisor.reap():
            logger.warning("cell %s exited (%s, code %s)", ended.cell, ended.reason, ended.code)
            metrics.cell_exits.labels(str(ended.cell), ended.reason).inc()
        for cell in supervisor.cells:
            metrics.cell_up.labels(str(cell.index)).set(1.0 if cell.available else 0.0)

    async def synchronization() -> None:
        """Measure the cells' correlation on the shared dependency; tell every live cell."""
        reading = shared.loop_reading()
        metrics.correlation.set(reading["correlation"])
        metrics.peak_to_mean.set(reading["peak_to_mean"])
        down = sum(1 for c in supervisor.cells if not c.available)
        payload = {
            "correlation": min(1.0, max(0.0, reading["correlation"])),
            "unhealthy_cells": down / settings.cells,
        }

        async def push(index: int) -> None:
            cell = supervisor.cells[index]
            if cell.alive:
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(
                        f"{cell.url}/admin/signals",
                        json=payload,
                        headers=headers,
                        timeout=SIGNAL_TIMEOUT,
                    )

        await asyncio.gather(*(push(i) for i in range(settings.cells)))

    async def relay_admin(request: Request) -> Response:
        """Data-plane listener: pass an /admin or /dashboard call on to the admin listener."""
        if not gateway.admin_url:
            return JSONResponse({"error": "the admin listener is not up"}, status_code=503)
        forwarded = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "accept")
        }
        try:
            answer = await client.request(
                request.method,
                f"{gateway.admin_url[0]}{request.url.path}",
                params=request.query_params,
                content=await request.body(),
                headers=forwarded,
                timeout=ADMIN_RELAY_TIMEOUT,
            )
        except httpx.HTTPError as error:
            body = {"error": f"admin listener unreachable: {type(error).__name__}"}
            return JSONResponse(body, status_code=502)
        kept = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("content-type", "www-authenticate", "retry-after", "cache-control")
        }
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def data_lifespan(_: Starlette) -> AsyncIterator[None]:
        handoff.attach(asyncio.get_running_loop())
        publish()
        loops = [
            asyncio.create_task(_every(SYNC_SECONDS, synchronization, "synchronization")),
            asyncio.create_task(_every(CHECK_SECONDS, watch_lost_writes, "lost writes")),
            asyncio.create_task(_every(PUBLISH_SECONDS, publish, "publish")),
        ]
        try:
            yield
        finally:
            await _cancel(loops)
            handoff.attach(None)
            await client.aclose()
            await cells_client.aclose()
            await shared.dependency.aclose()

    @contextlib.asynccontextmanager
    async def admin_lifespan(_: Starlette) -> AsyncIterator[None]:
        loops = [
            asyncio.create_task(_every(1.0, window.tick, "metric window")),
            asyncio.create_task(_every(MONITOR_SECONDS, monitor, "monitor")),
            asyncio.create_task(_every(LEASE_CHECK_SECONDS, lease_tick, "lease")),
        ]
        try:
            yield
        finally:
            await _cancel(loops)
            await admin_client.aclose()

    every_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    data_routes = [
        Route("/users/{user_id}/profile", profile, methods=["GET"]),
        Route("/users/{user_id}/payments", payments, methods=["POST"]),
        Route("/users/{user_id}/recommendations", recommendations, methods=["GET"]),
        Route("/users/{user_id}/config", config_read, methods=["GET"]),
        Route("/health", health),
        Route("/metrics", metrics_endpoint),
        Route("/targets", targets),
        Route("/internal/shared/{cell:int}", shared_call, methods=["POST"]),
        Route("/admin/{rest:path}", relay_admin, methods=every_method),
        Route("/dashboard", relay_admin, methods=["GET"]),
    ]
    admin_routes = [
        Route("/health", health),
        # One route per path, so a 405 names every method the path has (Allow).
        Route("/admin/faults", faults_endpoint, methods=["POST", "DELETE"]),
        Route("/admin/cache/invalidate", invalidate, methods=["POST"]),
        Route("/admin/jitter", jitter, methods=["POST"]),
        Route("/admin/defenses", defenses, methods=["POST"]),
        Route("/admin/openapi.json", openapi, methods=["GET"]),
        Route("/admin/process", process, methods=["GET"]),
        Route("/admin/cells/{index}/kill", kill_cell, methods=["POST"]),
        Route("/admin/cells/restart", restart_cells, methods=["POST"]),
        Route("/admin/cells/{index}/memory-pressure", memory_pressure, methods=["POST"]),
        Route("/admin/reset", reset, methods=["POST"]),
        Route("/admin/lease", lease_endpoint, methods=["GET", "POST"]),
        Route("/admin/correlation", correlation),
        Route("/admin/metastable", metastable),
        Route("/admin/metastable/resume", resume_recovery, methods=["POST"]),
        Route("/admin/state", state),
        Route("/admin/events", events),
        Route("/admin/increase", increase),
        Route("/admin/lost-writes", lost_writes),
    ]
    # The live dashboard page and its data (behind the admin token): app/dashboard.py.
    admin_routes += dashboard_routes(token)
    auth = [Middleware(AdminAuthMiddleware, token=token)]
    gateway.data_app = Starlette(routes=data_routes, middleware=auth, lifespan=data_lifespan)
    # The token first (a stranger learns nothing, not even a size limit), then the size limit.
    admin_middleware = [*auth, Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)]
    gateway.admin_app = Starlette(
        routes=admin_routes,
        middleware=admin_middleware,
        lifespan=admin_lifespan,
        exception_handlers=json_errors(),
    )
    return gateway


def _acknowledged_key(content: bytes) -> str | None:
    """The idempotency key of a payment the cell acknowledged (committed), else None."""
    try:
        data = json.loads(content)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("acknowledged") is not True:
        return None
    key = data.get("idempotency_key")
    return key if isinstance(key, str) else None
