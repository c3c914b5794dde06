"""The admin API a service embeds: faults, defenses, jitter, caches, state, events, metrics.

The paths and JSON shapes are the reference system's gateway's (``/admin/faults``,
``/admin/defenses``, ``/admin/jitter``, ``/admin/cache/invalidate``, ``/admin/reset``,
``/admin/lease``, ``/admin/state``, ``/admin/events``, ``/admin/increase``), so the
extension's actions and probes drive a user's service unchanged. The service is one
failure domain (one "cell", the recorder's ``cell`` label).

Each operation is first one cell's (``add_fault``, ``switch_defenses``, ``set_jitter``,
``invalidate_caches``, ``reset``, ``events_since``, ``window.increase``: the per-cell
answers); ``admin_app`` answers them as a system of one cell (the answer under ``cells``,
and the lease), ``cell_routes`` as one cell of a larger system whose gateway fans out to it
and holds the lease: the reference system's cells. A host adds what only it knows through
hooks: the events of its earlier processes (``history``), its own reset work (``on_reset``),
and its own series on the recorder's registry (``recorder``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from chaosemergence.app.faults import Fault, FaultTable
from chaosemergence.app.lease import Lease
from chaosemergence.app.window import MetricWindow
from chaosemergence.contract import (
    MAX_BODY_BYTES,
    SINCE,
    AdminContract,
    InvalidField,
    cells_schema,
    check,
    check_fault,
    check_lease_seconds,
    check_query_number,
    defenses_schema,
    finite_json,
    metric_window_schema,
    renewal_schema,
    switch_schema,
)
from chaosemergence.defenses import EventLog, Guard, Jitter
from chaosemergence.defenses.metrics import PrometheusRecorder

__all__ = ["Dependency", "DependencyFault", "EmergenceAdmin"]

P = ParamSpec("P")
R = TypeVar("R")

#: A lease that nobody renews puts every defense back on after this many seconds.
DEFAULT_LEASE_SECONDS = 60.0


class Switchable(Protocol):
    """Anything a defense switch turns on and off: every defense in the library is one."""

    enabled: bool


class DependencyFault(RuntimeError):
    """An error injected into a dependency call by the admin API (``kind: error``)."""


class InjectedTimeout(TimeoutError):
    """A dependency call whose answer an injected ``timeout`` fault lost."""


@dataclass
class Dependency:
    """A registered dependency: ``await db.call(fn, *args)`` runs ``fn`` under the guard
    (when one was given) with the injected faults applied to each attempt."""

    name: str
    guard: Guard | None
    hang_seconds: float
    _faults: FaultTable
    _rng: random.Random
    calls: int = 0
    faulted: int = 0

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` under the guard, the faults applied to each attempt."""
        attempt = functools.partial(self.attempt, fn, *args, **kwargs)
        if self.guard is None:
            return await attempt()
        return await self.guard.run(attempt)

    async def attempt(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """One attempt of ``fn``, with the faults drawn for it (no guard): for a service that
        nests its own defenses around the call."""
        self.calls += 1
        drawn = self._faults.draw(self.name, self._rng)
        if drawn:
            self.faulted += 1
        for fault in drawn:
            if fault.kind == "error":
                raise DependencyFault(f"{self.name}: injected error ({fault.id})")
            if fault.kind == "timeout":
                # The call hangs, then its answer is lost.
                await asyncio.sleep(self.hang_seconds)
                raise InjectedTimeout(f"{self.name}: injected timeout ({fault.id})")
        delay = sum(f.latency_ms for f in drawn if f.kind == "latency") / 1000.0
        if delay > 0:
            await asyncio.sleep(delay)
        return await fn(*args, **kwargs)

    def state(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "faulted": self.faulted,
            "guard": self.guard.snapshot() if self.guard is not None else None,
        }


# The events of a host's earlier processes at or after a time (``history``), as dicts.
History = Callable[[float], Iterable[Mapping[str, Any]]]
# A host's own reset work (``on_reset``): what it did, by name, added to the reset's answer.
ResetHook = Callable[[], Mapping[str, Any] | Awaitable[Mapping[str, Any]]]

# What a cache's callbacks return: how many entries, or counts by name (``removed``,
# ``prewarming`` for a refill started in the background, ...), summed over the caches.
Counts = int | Mapping[str, int]


@dataclass
class _Cache:
    invalidate: Callable[[], Counts | Awaitable[Counts]]
    prewarm: Callable[[], int | Awaitable[int]] | None
    invalidations: int = 0


@dataclass(frozen=True)
class _Group:
    """Defenses switched together by the service's own code (``defense_group``)."""

    names: tuple[str, ...]
    get: Callable[[str], bool]
    set: Callable[[dict[str, bool]], None]


@dataclass
class _Registry:
    dependencies: dict[str, Dependency] = field(default_factory=dict)
    # Dependencies whose calls draw their faults themselves (``fault_target``).
    targets: set[str] = field(default_factory=set)
    caches: dict[str, _Cache] = field(default_factory=dict)
    timers: dict[str, Switchable] = field(default_factory=dict)
    defenses: dict[str, list[Switchable]] = field(default_factory=dict)
    groups: list[_Group] = field(default_factory=list)
    reset_hooks: list[ResetHook] = field(default_factory=list)


def _bad_request(error: ValueError) -> JSONResponse:
    """400 naming the field (the reference system's answer: ``error`` and ``field``)."""
    answer = {"error": str(error)}
    if isinstance(error, InvalidField):
        answer["field"] = error.field
    return JSONResponse(answer, status_code=400)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidField("body", f"must be at most {MAX_BODY_BYTES} bytes")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidField("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidField("body", "must be a JSON object")
    return body


async def _maybe_await[T](value: T | Awaitable[T]) -> T:
    if isinstance(value, Awaitable):
        return await value
    return value


def _add_counts(total: dict[str, int], counts: Counts, key: str) -> None:
    if isinstance(counts, Mapping):
        for name, count in counts.items():
            total[name] = total.get(name, 0) + int(count)
    else:
        total[key] = total.get(key, 0) + int(counts)


class EmergenceAdmin:
    """The registry a service fills, and the admin API and ``/metrics`` it serves.

    ::

        admin = EmergenceAdmin(token=os.environ["ADMIN_TOKEN"])
        db = admin.dependency("database", guard=guard)   # faults, defense switches, metrics
        admin.cache("profiles", invalidate=cache.clear)   # /admin/cache/invalidate
        admin.timer("refresh", jitter=jitter)             # /admin/jitter
        app = Starlette(routes=[*my_routes, *admin.routes()], lifespan=admin.lifespan)

    Give the defenses ``events=admin.events`` (their activations are ``/admin/events``) and
    record user requests with ``admin.recorder.request(route, outcome, seconds)``.

    A host with more to say passes ``recorder`` (its own registry: its collectors' series
    are ``/metrics`` and ``/admin/increase`` too), ``history`` (events its earlier processes
    recorded, listed before this process's) and registers ``on_reset`` work.
    """

    def __init__(
        self,
        *,
        token: str | None,
        recorder: PrometheusRecorder | None = None,
        events: EventLog | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        faults: FaultTable | None = None,
        history: History | None = None,
    ) -> None:
        """``token`` None: only ``cell_routes`` is served, behind the host app's own auth.
        ``faults``: a table the service's own dependencies already draw from. ``history``:
        ``history(since)`` gives the events at or after ``since`` that earlier processes of
        this service recorded (``/admin/events`` lists them first)."""
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise ValueError("token must be a string of at least 16 characters")
        self._token = token.encode() if token is not None else None
        self.recorder = (
            recorder if recorder is not None else PrometheusRecorder(CollectorRegistry())
        )
        self.events = events if events is not None else EventLog()
        self.lease_seconds = check_lease_seconds(lease_seconds, DEFAULT_LEASE_SECONDS)
        self._rng = rng if rng is not None else random.Random()
        if clock is None:
            clock = faults.clock if faults is not None else time.monotonic
        self._clock = clock
        self.faults = faults if faults is not None else FaultTable(clock=clock)
        self.lease = Lease(clock=clock)
        self.window = MetricWindow(self.recorder.registry)
        self._registry = _Registry()
        self._fault_ids = itertools.count(1)
        self.jitter_removed = False
        self.started_at = time.time()
        self._ticker: asyncio.Task[None] | None = None
        self._history = history

    # ------------------------------------------------------------------ registration
    def dependency(
        self, name: str, *, guard: Guard | None = None, hang_seconds: float = 1.0
    ) -> Dependency:
        """Register a dependency: faults target it by ``name``; its guard's layers become the
        switches ``circuit_breaker``, ``adaptive_throttle`` and ``retry_budget``, and its
        counters the ``emergence_dependency_*`` series."""
        self._check_name("dependency", name, self._registry.dependencies)
        if name == "all":
            raise ValueError("dependency: 'all' names every dependency; pick another name")
        if not 0 < hang_seconds <= 60:
            raise ValueError(f"hang_seconds must be in (0, 60], got {hang_seconds!r}")
        dep = Dependency(name, guard, hang_seconds, self.faults, self._rng)
        self._registry.dependencies[name] = dep
        if guard is not None:
            self.recorder.track(guard, dependency=name)
            for switch, layer in (
                ("circuit_breaker", guard.breaker),
                ("adaptive_throttle", guard.throttle),
                ("retry_budget", guard.retry),
            ):
                if layer is not None:
                    self._registry.defenses.setdefault(switch, []).append(layer)
        return dep

    def fault_target(self, name: str) -> None:
        """Register a dependency whose calls apply the faults themselves: faults target it by
        ``name`` and the service's code draws them with ``admin.faults.draw(name, rng)``
        (the reference system's simulated dependencies hold a worker for a timeout)."""
        self._check_name("dependency", name, {n: 1 for n in self._fault_names()})
        if name == "all":
            raise ValueError("dependency: 'all' names every dependency; pick another name")
        self._registry.targets.add(name)

    def _fault_names(self) -> list[str]:
        return sorted({*self._registry.dependencies, *self._registry.targets})

    def cache(
        self,
        name: str,
        *,
        invalidate: Callable[[], Counts | Awaitable[Counts]],
        prewarm: Callable[[], int | Awaitable[int]] | None = None,
    ) -> None:
        """Register a cache: ``invalidate()`` drops it and returns how many entries it removed;
        ``prewarm()`` (optional, run after when the ``cache_prewarming`` switch is on) refills
        it and returns how many."""
        self._check_name("cache", name, self._registry.caches)
        self._registry.caches[name] = _Cache(invalidate, prewarm)

    def timer(self, name: str, *, jitter: Jitter | Switchable) -> None:
        """Register a periodic timer's jitter: ``remove_all_jitter`` turns it off."""
        self._check_name("timer", name, self._registry.timers)
        self._registry.timers[name] = jitter

    def defense(self, name: str, *objects: Switchable) -> None:
        """Register objects (``enabled`` attributes) under a defense switch ``name``, such as
        ``request_coalescing`` for a SingleFlight or ``early_expiration`` for XFetch."""
        if not name or not name.replace("_", "").isalnum():
            raise ValueError(f"name must be letters, digits and underscores, got {name!r}")
        if not objects:
            raise ValueError("objects: give at least one object with an `enabled` attribute")
        for obj in objects:
            if not isinstance(getattr(obj, "enabled", None), bool):
                raise ValueError(f"objects: {obj!r} has no boolean `enabled` attribute")
        self._registry.defenses.setdefault(name, []).extend(objects)

    def defense_group(
        self,
        names: Sequence[str],
        *,
        get: Callable[[str], bool],
        set: Callable[[dict[str, bool]], None],
    ) -> None:
        """Register defenses the service switches itself, together: ``set({name: on, ...})``
        gets every name of one request at once (switching one may depend on another), and
        ``get(name)`` tells whether it is on."""
        for name in names:
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(f"name must be letters, digits and underscores, got {name!r}")
            if name in self.defense_names:
                raise ValueError(f"defense: {name!r} is already registered")
        self._registry.groups.append(_Group(tuple(names), get, set))

    def on_reset(self, hook: ResetHook) -> None:
        """Register the service's own reset work, run by ``/admin/reset`` after the faults are
        cleared and every defense and jitter is back: ``hook()`` (sync or async) returns what
        it did by name (``{"queued_calls_drained": 3}``), added to the reset's answer."""
        if not callable(hook):
            raise ValueError(f"hook: must be callable, got {hook!r}")
        self._registry.reset_hooks.append(hook)

    @staticmethod
    def _check_name(what: str, name: str, known: Mapping[str, Any]) -> None:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError(f"{what}: name must be a string of 1-64 characters, got {name!r}")
        if name in known:
            raise ValueError(f"{what}: {name!r} is already registered")

    @property
    def defense_names(self) -> list[str]:
        grouped = [n for group in self._registry.groups for n in group.names]
        return sorted({*self._registry.defenses, *grouped})

    def _defense_states(self) -> dict[str, bool]:
        states = {
            name: all(o.enabled for o in objs) for name, objs in self._registry.defenses.items()
        }
        for group in self._registry.groups:
            for name in group.names:
                states[name] = states.get(name, True) and group.get(name)
        return dict(sorted(states.items()))

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Keep the metrics window (``/admin/increase``) and the lease ticking while open."""
        self._ticker = asyncio.create_task(self._tick_forever(), name="emergence-admin")
        try:
            yield
        finally:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Any) -> AsyncIterator[None]:
        """``Starlette(lifespan=admin.lifespan)`` for a service with no lifespan of its own."""
        async with self.running():
            yield

    async def _tick_forever(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(1.0)

    def tick(self) -> None:
        """One second's work: a metrics snapshot, and an expired lease puts everything back."""
        self.window.tick()
        if self.lease.expired():
            self.lease.release()
            self.lease.expirations += 1
            self._restore()
            self.events.record(
                "lease",
                "activated",
                "the lease on weakened defenses expired unrenewed: every defense back on, "
                "jitter restored",
            )

    # ------------------------------------------------------------------ operations
    def _switch(self, names: list[str] | None, enabled: bool) -> None:
        for name, objects in self._registry.defenses.items():
            if names is None or name in names:
                for obj in objects:
                    obj.enabled = enabled
        for group in self._registry.groups:
            chosen = {n: enabled for n in group.names if names is None or n in names}
            if chosen:
                group.set(chosen)

    def _set_jitter(self, enabled: bool) -> None:
        self.jitter_removed = not enabled
        for jitter in self._registry.timers.values():
            jitter.enabled = enabled

    def _weakened(self) -> bool:
        return not all(self._defense_states().values()) or self.jitter_removed

    def _hold_lease(self, seconds: float) -> dict[str, Any]:
        if self._weakened():
            if self.lease.held:
                self.lease.renew(seconds)
            else:
                self.lease.take(seconds)
        else:
            self.lease.release()
        return self.lease.view()

    def _restore(self) -> None:
        self._switch(None, True)
        self._set_jitter(True)

    def state(self) -> dict[str, Any]:
        """The one cell's state, as ``/admin/state`` shows it."""
        reg = self._registry
        return {
            "defenses": self._defense_states(),
            "dependencies": {name: dep.state() for name, dep in sorted(reg.dependencies.items())},
            "caches": {name: {"invalidations": c.invalidations} for name, c in reg.caches.items()},
            "timers": {name: {"jitter": j.enabled} for name, j in reg.timers.items()},
            "faults": self.faults.snapshot(),
            "jitter_removed": self.jitter_removed,
        }

    # ------------------------------------------------------------------ one cell's operations
    def add_fault(self, body: Any, fault_id: str | None = None) -> Fault:
        """Check a fault request (the contract's ``check_fault``) and apply it here."""
        normalized = check_fault(body, self._fault_names())
        if fault_id is not None:
            check(AdminContract.fault_id, fault_id, "id")
        return self.faults.add(normalized, fault_id or f"fault-{next(self._fault_ids)}")

    def switch_defenses(self, enabled: bool, names: list[str] | None) -> dict[str, Any]:
        """Switch the named defenses (None: all); this cell's answer."""
        self._switch(names, enabled)
        return {
            "changed": names if names is not None else self.defense_names,
            "enabled": enabled,
            "defenses": self._defense_states(),
        }

    def set_jitter(self, enabled: bool) -> dict[str, Any]:
        """Remove (False) or restore (True) every registered timer's jitter; this cell's answer."""
        self._set_jitter(enabled)
        return {
            "jitter": enabled,
            "jitter_removed": self.jitter_removed,
            "timers": sorted(self._registry.timers),
        }

    async def invalidate_caches(self) -> dict[str, Any]:
        """Drop every registered cache (then prewarm it when ``cache_prewarming`` is on)."""
        total = {"removed": 0, "prewarmed": 0}
        prewarming = self._defense_states().get("cache_prewarming", True)
        errors: dict[str, str] = {}
        for name, cache in self._registry.caches.items():
            # One cache's callback failing must not keep the others from being dropped.
            try:
                cache.invalidations += 1
                _add_counts(total, await _maybe_await(cache.invalidate()), "removed")
                if cache.prewarm is not None and prewarming:
                    _add_counts(total, await _maybe_await(cache.prewarm()), "prewarmed")
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"
        cell: dict[str, Any] = dict(total)
        if errors:
            cell["errors"] = errors
        return cell

    async def reset(self) -> dict[str, Any]:
        """Back to normal: faults cleared, lease released, every defense and jitter back on,
        then the registered ``on_reset`` work; this cell's answer."""
        cleared = self.faults.clear()
        self.lease.release()
        self._restore()
        cell: dict[str, Any] = {"faults_cleared": cleared}
        for hook in self._registry.reset_hooks:
            cell.update(await _maybe_await(hook()))
        cell["defenses"] = self._defense_states()
        return cell

    def events_since(self, since: float) -> list[dict[str, Any]]:
        """The events at or after ``since``: the earlier processes' (``history``), then this
        one's; this cell's answer."""
        earlier = [dict(e) for e in self._history(since)] if self._history is not None else []
        return earlier + [e.as_dict() for e in self.events.since(since)]

    # ------------------------------------------------------------------ HTTP
    def routes(self) -> list[BaseRoute]:
        """``/admin/...`` (token-protected) and ``/metrics``, for ``Starlette(routes=...)``;
        FastAPI: ``app.mount("/admin", admin.admin_app())`` and
        ``app.add_route("/metrics", admin.metrics)``."""
        return [Mount("/admin", app=self.admin_app()), Route("/metrics", self.metrics)]

    def admin_app(self) -> Starlette:
        """The admin API alone (paths without the ``/admin`` prefix), to mount at ``/admin``."""
        if self._token is None:
            raise ValueError("admin_app needs a token (EmergenceAdmin(token=...))")
        routes = [
            Route("/faults", self._add_fault, methods=["POST"]),
            Route("/faults", self._clear_faults, methods=["DELETE"]),
            Route("/defenses", self._defenses, methods=["POST"]),
            Route("/jitter", self._jitter, methods=["POST"]),
            Route("/cache/invalidate", self._invalidate, methods=["POST"]),
            Route("/reset", self._reset, methods=["POST"]),
            Route("/lease", self._lease, methods=["GET", "POST"]),
            Route("/state", self._state, methods=["GET"]),
            Route("/events", self._events, methods=["GET"]),
            Route("/increase", self._increase, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.add_middleware(_TokenMiddleware, token=self._token)
        return app

    def cell_routes(self, prefix: str = "/admin") -> list[BaseRoute]:
        """The generic operations answered as one cell of a larger system, whose gateway fans
        out to it on the same paths and holds the lease (the reference system's cells): each
        answer is this cell's alone. Not token-protected: the host app guards ``prefix``."""
        return [
            Route(f"{prefix}/faults", self._cell_add_fault, methods=["POST"]),
            Route(f"{prefix}/faults", self._clear_faults, methods=["DELETE"]),
            Route(f"{prefix}/defenses", self._cell_defenses, methods=["POST"]),
            Route(f"{prefix}/jitter", self._cell_jitter, methods=["POST"]),
            Route(f"{prefix}/cache/invalidate", self._cell_invalidate, methods=["POST"]),
            Route(f"{prefix}/reset", self._cell_reset, methods=["POST"]),
            Route(f"{prefix}/events", self._cell_events, methods=["GET"]),
            Route(f"{prefix}/increase", self._cell_increase, methods=["GET"]),
        ]

    async def metrics(self, _request: Request) -> Response:
        """The Prometheus exposition of the recorder's registry (not token-protected)."""
        return Response(generate_latest(self.recorder.registry), media_type=CONTENT_TYPE_LATEST)

    @property
    def _cell(self) -> str:
        return self.recorder.cell

    def _cell_index(self) -> int:
        return int(self._cell) if self._cell.isdigit() else 0

    # One cell of a larger system.
    async def _cell_add_fault(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
            fault = self.add_fault(body, body.get("id"))
        except ValueError as error:
            return _bad_request(error)
        return JSONResponse(fault.as_dict(self._clock()), status_code=201)

    async def _cell_defenses(self, request: Request) -> Response:
        try:
            body = check(defenses_schema(self.defense_names), await _json_body(request))
        except ValueError as error:
            return _bad_request(error)
        return JSONResponse(self.switch_defenses(body["enabled"], body.get("names")))

    async def _cell_jitter(self, request: Request) -> Response:
        try:
            body = check(switch_schema(), await _json_body(request))
        except ValueError as error:
            return _bad_request(error)
        return JSONResponse(self.set_jitter(body["enabled"]))

    async def _cell_invalidate(self, _request: Request) -> Response:
        return JSONResponse(await self.invalidate_caches())

    async def _cell_reset(self, _request: Request) -> Response:
        return JSONResponse(finite_json(await self.reset()))

    async def _cell_events(self, request: Request) -> Response:
        try:
            since = check_query_number(request.query_params.get("since"), "since", SINCE, 0.0)
        except ValueError as error:
            return _bad_request(error)
        return JSONResponse(finite_json(self.events_since(since)))

    async def _cell_increase(self, request: Request) -> Response:
        try:
            seconds = self._window_seconds(request)
        except ValueError as error:
            return _bad_request(error)
        if self._ticker is None:
            return self._not_ticking()
        return JSONResponse(self.window.increase(seconds))

    @staticmethod
    def _window_seconds(request: Request) -> float:
        return check_query_number(
            request.query_params.get("seconds"), "seconds", metric_window_schema(), 30.0
        )

    @staticmethod
    def _not_ticking() -> JSONResponse:
        return JSONResponse(
            {
                "error": "the metrics window is not running: run the app with "
                "lifespan=admin.lifespan, or enter `async with admin.running()` in yours"
            },
            status_code=503,
        )

    # A system of one cell.
    async def _add_fault(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
            cells = check(cells_schema(), body.get("cells"), "cells")
            if cells is not None and set(cells) != {self._cell_index()}:
                raise InvalidField(
                    "cells",
                    f"this service is one failure domain (cell {self._cell_index()}): "
                    f"give null or [{self._cell_index()}], got {cells!r}",
                )
            fault = self.add_fault(body)
        except ValueError as error:
            return _bad_request(error)
        normalized = check_fault(body, self._fault_names())
        return JSONResponse(
            {
                "id": fault.id,
                **normalized,
                "cells": [self._cell_index()],
                "skipped": {},
                "expires_at": time.time() + normalized["duration"],
            },
            status_code=201,
        )

    async def _clear_faults(self, request: Request) -> Response:
        return JSONResponse({"cleared": self.faults.clear(request.query_params.get("id"))})

    async def _defenses(self, request: Request) -> Response:
        known = self.defense_names
        try:
            body = check(defenses_schema(known), await _json_body(request))
            enabled, names = body["enabled"], body.get("names")
            seconds = check_lease_seconds(body.get("lease_seconds"), self.lease_seconds)
        except ValueError as error:
            return _bad_request(error)
        cell = self.switch_defenses(enabled, names)
        held = self._hold_lease(seconds)
        return JSONResponse(
            {
                "enabled": enabled,
                "names": names or known,
                "cells": {str(self._cell_index()): cell},
                "lease": held,
            }
        )

    async def _jitter(self, request: Request) -> Response:
        try:
            body = check(switch_schema(), await _json_body(request))
            seconds = check_lease_seconds(body.get("lease_seconds"), self.lease_seconds)
        except ValueError as error:
            return _bad_request(error)
        cell = self.set_jitter(body["enabled"])
        held = self._hold_lease(seconds)
        return JSONResponse({"cells": {str(self._cell_index()): cell}, "lease": held})

    async def _invalidate(self, _request: Request) -> Response:
        cell = await self.invalidate_caches()
        return JSONResponse({"cells": {str(self._cell_index()): cell}})

    async def _reset(self, _request: Request) -> Response:
        cell = await self.reset()
        return JSONResponse(
            finite_json({"restarted": [], "cells": {str(self._cell_index()): cell}})
        )

    async def _lease(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = check(renewal_schema(), await _json_body(request))
                seconds = check_lease_seconds(body.get("seconds"), self.lease_seconds, "seconds")
            except ValueError as error:
                return _bad_request(error)
            self.lease.renew(seconds)
        return JSONResponse(self.lease.view())

    async def _state(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "started_at": self.started_at,
                "gateway": {"lease": self.lease.view(), "cells": 1},
                "cells": [
                    {
                        "index": self._cell_index(),
                        "alive": True,
                        "restarting": False,
                        "restarts": 0,
                        "state": self.state(),
                    }
                ],
            }
        )

    async def _events(self, request: Request) -> Response:
        try:
            since = check_query_number(request.query_params.get("since"), "since", SINCE, 0.0)
        except ValueError as error:
            return _bad_request(error)
        events = [{**e, "cell": self._cell} for e in self.events_since(since)]
        return JSONResponse(
            finite_json({"started_at": self.started_at, "events": events, "unanswered": {}})
        )

    async def _increase(self, request: Request) -> Response:
        try:
            seconds = self._window_seconds(request)
        except ValueError as error:
            return _bad_request(error)
        if self._ticker is None:
            return self._not_ticking()
        return JSONResponse(
            {"seconds": seconds, "samples": self.window.increase(seconds), "unanswered": {}}
        )


class _TokenMiddleware:
    """401 unless ``Authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, app: Any, *, token: bytes) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                response = JSONResponse(
                    {"error": "missing or wrong admin token (Authorization: Bearer ...)"},
                    status_code=401,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
