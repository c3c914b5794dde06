"""The HTTP face of one cell: user routes, internal admin routes and /metrics.

The generic admin operations are the embedding's (``chaosemergence.embed.EmergenceAdmin``,
answered as one cell of the system: ``cell_routes``) with the cell's parts registered:
faults on its dependencies, cache invalidation, jitter removal, defense switches, the reset
(the cell's own reset work is an ``on_reset`` hook), the events (those of the cell's earlier
processes are its ``history``), ``/admin/increase`` and ``/metrics`` (the cell's collector
on the embedding's recorder's registry). The routes only the reference system has (memory
pressure, the metastable state and its resumption, the full state, the synchronization
signals, lost writes, process figures) are this module's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chaosemergence.app.auth import AdminAuthMiddleware, json_errors
from chaosemergence.app.cell_service import CellService, Reply
from chaosemergence.app.metrics import CellCollector
from chaosemergence.app.process import process_figures
from chaosemergence.app.switches import DEFENSES
from chaosemergence.contract import (
    CALLER_TIMEOUT_HEADER,
    InvalidField,
    check_pressure,
    finite_json,
    parse_caller_timeout,
)
from chaosemergence.defenses.metrics import PrometheusRecorder
from chaosemergence.embed import EmergenceAdmin

__all__ = ["create_cell_app", "json_body", "reply_response"]


class SafeJSONResponse(JSONResponse):
    """JSON where non-finite floats (inf, nan) become null instead of an exception."""

    def render(self, content: Any) -> bytes:
        return super().render(finite_json(content))


def reply_response(reply: Reply) -> JSONResponse:
    headers = {"Retry-After": str(reply.retry_after)} if reply.retry_after else None
    return JSONResponse(reply.body, status_code=reply.status, headers=headers)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or ValueError naming the problem."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = await request.json()
    except ValueError as error:
        raise ValueError(f"body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _share(body: dict[str, Any], name: str) -> float:
    """``body[name]`` as a number in [0, 1], or ValueError naming it."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _bad_request(error: ValueError) -> JSONResponse:
    field = error.field if isinstance(error, InvalidField) else None
    return JSONResponse({"error": str(error), "field": field}, status_code=400)


class _JitterRemoval:
    """The cell's timers as the embedding's registered timer: off removes their jitter."""

    def __init__(self, service: CellService) -> None:
        self._service = service

    @property
    def enabled(self) -> bool:
        return not self._service.timers.removed

    @enabled.setter
    def enabled(self, on: bool) -> None:
        self._service.set_jitter(on)


def embedded_admin(service: CellService, recorder: PrometheusRecorder) -> EmergenceAdmin:
    """The cell's generic admin operations, served by the embedding: its dependencies draw
    the faults themselves (from the service's table, a timeout holds a simulated worker), its
    profile cache prewarms in the background, its defenses switch together, its reset does
    the cell's own work too, its events include its earlier processes', and its series (the
    cell's collector, on ``recorder``'s registry) are the embedding's ``/metrics``."""
    admin = EmergenceAdmin(
        token=None,
        recorder=recorder,
        events=service.events,
        faults=service.faults,
        history=service.earlier_events,
    )
    recorder.registry.register(CellCollector(service))
    for name in service.clients.dependencies:
        admin.fault_target(name)
    admin.cache("profiles", invalidate=service.invalidate_cache)
    admin.timer("timers", jitter=_JitterRemoval(service))
    admin.defense_group(DEFENSES, get=lambda name: service.enabled[name], set=service.set_switches)
    admin.on_reset(service.reset_own)
    return admin


def create_cell_app(
    service: CellService, token: str, *, recorder: PrometheusRecorder | None = None
) -> Starlette:
    """``recorder``: the one the service's defenses record through (its registry gets the
    cell's collector); a new one on a registry of its own when None."""
    if recorder is None:
        recorder = PrometheusRecorder(CollectorRegistry(), cell=str(service.index))
    admin = embedded_admin(service, recorder)

    def user_read(
        serve: Callable[..., Awaitable[Reply]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A user's read (profile, recommendations): the caller's timeout, then `serve`."""

        async def read(request: Request) -> Response:
            try:
                timeout = parse_caller_timeout(request.headers.get(CALLER_TIMEOUT_HEADER))
            except ValueError as error:
                return _bad_request(error)
            user_id = request.path_params["user_id"]
            return reply_response(await serve(user_id, caller_timeout=timeout))

        return read

    async def payments(request: Request) -> Response:
        try:
            timeout = parse_caller_timeout(request.headers.get(CALLER_TIMEOUT_HEADER))
            body = await json_body(request)
            amount = body.get("amount_cents")
            key = body.get("idempotency_key")
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise ValueError(f"amount_cents must be a positive integer, got {amount!r}")
            if not isinstance(key, str) or not 1 <= len(key) <= 128:
                raise ValueError("idempotency_key must be a string of 1-128 characters")
        except ValueError as error:
            return _bad_request(error)
        user_id = request.path_params["user_id"]
        return reply_response(await service.pay(user_id, amount, key, caller_timeout=timeout))

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "cell": service.index})

    async def memory_pressure(request: Request) -> Response:
        try:
            rate, duration = check_pressure(await json_body(request))
        except ValueError as error:
            return _bad_request(error)
        return JSONResponse(service.start_memory_pressure(rate, duration), status_code=201)

    async def signals(request: Request) -> Response:
        try:
            body = await json_body(request)
            value = _share(body, "correlation")
            unhealthy = _share(body, "unhealthy_cells") if "unhealthy_cells" in body else None
        except ValueError as error:
            return _bad_request(error)
        service.control.set_correlation(value, unhealthy)
        return JSONResponse({"correlation": value, "unhealthy_cells": unhealthy})

    async def resume(request: Request) -> Response:
        try:
            body = await json_body(request)
            reason = body.get("reason", "resumed by an operator (admin API)")
            if not isinstance(reason, str) or not 1 <= len(reason) <= 200:
                raise ValueError("reason must be a string of 1-200 characters")
        except ValueError as error:
            return _bad_request(error)
        return SafeJSONResponse(service.resume_recovery(reason))

    async def metastable(_: Request) -> Response:
        return SafeJSONResponse(service.metastable())

    async def state(_: Request) -> Response:
        return SafeJSONResponse(service.state())

    async def process(_: Request) -> Response:
        """Resident memory, descriptors, threads and this loop's asyncio tasks (the soak)."""
        import asyncio

        figures = await asyncio.to_thread(process_figures)
        return JSONResponse({**figures, "tasks": len(asyncio.all_tasks())})

    async def missing(request: Request) -> Response:
        try:
            body = await json_body(request)
            keys = body.get("keys", [])
            if not isinstance(keys, list):
                raise ValueError(f"keys must be a list of idempotency keys, got {keys!r}")
        except ValueError as error:
            return _bad_request(error)
        keys = [str(k) for k in keys]
        return JSONResponse({"missing": await service.store.missing_payments(keys)})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            # The embedding's metrics window (/admin/increase) ticks while the cell runs.
            async with admin.running():
                yield
        finally:
            await service.stop()

    routes = [
        Route("/users/{user_id}/profile", user_read(service.profile), methods=["GET"]),
        Route("/users/{user_id}/payments", payments, methods=["POST"]),
        Route(
            "/users/{user_id}/recommendations", user_read(service.recommendations), methods=["GET"]
        ),
        Route("/health", health),
        Route("/metrics", admin.metrics),
        *admin.cell_routes("/admin"),
        Route("/admin/memory-pressure", memory_pressure, methods=["POST"]),
        Route("/admin/signals", signals, methods=["POST"]),
        Route("/admin/metastable", metastable),
        Route("/admin/metastable/resume", resume, methods=["POST"]),
        Route("/admin/state", state),
        Route("/admin/payments/missing", missing, methods=["POST"]),
        Route("/admin/process", process, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(AdminAuthMiddleware, token=token)],
        lifespan=lifespan,
        exception_handlers=json_errors(),
    )
