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

Where each part lives: the shared state in app/gateway_context.py (``GatewayContext``),
the data plane in app/gateway_data.py, the admin API's actions in app/gateway_admin.py and
its reads in app/gateway_reads.py, the calls fanned out to the cells in
app/gateway_fleet.py, the gateway's own defenses in app/gateway_defenses.py and the handoff
in app/handoff.py. This module wires them: the context, the routes, middleware, lifespans.

Loops: on the admin loop the metric window (1 s) and the supervisor's monitor (a cell that
exited to be restarted comes back on its socket; 0.1 s); on the data-plane loop the
synchronization loop (1 s: the cells' correlation on the shared dependency it hosts, pushed
to every cell), the lost-write watch, and the snapshot it publishes for the admin API.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from chaosemergence.app.auth import AdminAuthMiddleware, BodyLimitMiddleware, json_errors
from chaosemergence.app.dashboard import dashboard_routes
from chaosemergence.app.gateway_admin import AdminActions
from chaosemergence.app.gateway_context import AcknowledgedPayments, GatewayContext
from chaosemergence.app.gateway_data import DataPlane
from chaosemergence.app.gateway_defenses import GatewayDefenses, GatewaySwitches
from chaosemergence.app.gateway_fleet import ADMIN_FANOUT_TIMEOUT, CellFleet
from chaosemergence.app.gateway_reads import AdminReads
from chaosemergence.app.handoff import DataPlaneHandoff
from chaosemergence.app.lease import Lease
from chaosemergence.app.metrics import GatewayMetrics
from chaosemergence.app.routing import Routing
from chaosemergence.app.supervisor import Supervisor
from chaosemergence.app.sync import SHARED_DEPENDENCY, SharedDependencyHost
from chaosemergence.app.window import MetricWindow
from chaosemergence.contract import MAX_BODY_BYTES, MAX_CORRELATION_WINDOW_SECONDS, AdminContract

__all__ = ["DataPlaneHandoff", "Gateway", "create_gateway"]

EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]


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
    """The gateway's data plane and admin API over ``supervisor``'s cells."""
    context = build_context(supervisor, token, registry or CollectorRegistry())
    data_plane = DataPlane(context)
    actions, reads = AdminActions(context), AdminReads(context)
    auth = [Middleware(AdminAuthMiddleware, token=token)]
    data_app = Starlette(
        routes=data_routes(data_plane, reads), middleware=auth, lifespan=data_plane.lifespan
    )
    # The token first (a stranger learns nothing, not even a size limit), then the size limit.
    admin_middleware = [*auth, Middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)]
    admin_app = Starlette(
        routes=admin_routes(actions, reads, token),
        middleware=admin_middleware,
        lifespan=actions.lifespan,
        exception_handlers=json_errors(),
    )
    return Gateway(data_app, admin_app, context.handoff, admin_url=context.admin_url)


def build_context(
    supervisor: Supervisor, token: str, registry: CollectorRegistry
) -> GatewayContext:
    """The gateway's shared state, every piece in its initial state."""
    settings = supervisor.settings
    metrics = GatewayMetrics(registry)
    window = MetricWindow(registry)
    contract = AdminContract(
        settings.cells, settings.dependencies, SHARED_DEPENDENCY, MAX_CORRELATION_WINDOW_SECONDS
    )
    shared = SharedDependencyHost(settings, rng=random.Random(settings.seed * 1000 + 999))
    # The admin API's own client (its thread's loop): it must not queue behind users'
    # requests in a shared pool, and a client belongs to one loop.
    admin_client = httpx.AsyncClient(
        timeout=httpx.Timeout(ADMIN_FANOUT_TIMEOUT, connect=ADMIN_FANOUT_TIMEOUT),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
    )
    return GatewayContext(
        settings=settings,
        supervisor=supervisor,
        token=token,
        registry=registry,
        metrics=metrics,
        window=window,
        contract=contract,
        shared=shared,
        defenses=GatewayDefenses(settings, metrics, Routing(settings.cells)),
        switches=GatewaySwitches(),
        payments=AcknowledgedPayments(settings.cells),
        fleet=CellFleet(supervisor, token, admin_client),
        handoff=DataPlaneHandoff(),
        lease=Lease(),
        started_at=time.time(),
    )


def data_routes(data_plane: DataPlane, reads: AdminReads) -> list[BaseRoute]:
    """The data-plane listener: users' requests, the shared dependency, /metrics, relays."""
    return [
        Route("/users/{user_id}/profile", data_plane.profile, methods=["GET"]),
        Route("/users/{user_id}/payments", data_plane.payments, methods=["POST"]),
        Route("/users/{user_id}/recommendations", data_plane.recommendations, methods=["GET"]),
        Route("/users/{user_id}/config", data_plane.config_read, methods=["GET"]),
        Route("/health", reads.health),
        Route("/metrics", data_plane.metrics_endpoint),
        Route("/targets", data_plane.targets),
        Route("/internal/shared/{cell:int}", data_plane.shared_call, methods=["POST"]),
        Route("/admin/{rest:path}", data_plane.relay_admin, methods=EVERY_METHOD),
        Route("/dashboard", data_plane.relay_admin, methods=["GET"]),
    ]


def admin_routes(actions: AdminActions, reads: AdminReads, token: str) -> list[BaseRoute]:
    """The admin listener (one route per path, so a 405 names every method it has)."""
    routes: list[BaseRoute] = [
        Route("/health", reads.health),
        Route("/admin/faults", actions.faults, methods=["POST", "DELETE"]),
        Route("/admin/cache/invalidate", actions.invalidate, methods=["POST"]),
        Route("/admin/jitter", actions.jitter, methods=["POST"]),
        Route("/admin/defenses", actions.defenses, methods=["POST"]),
        Route("/admin/openapi.json", reads.openapi, methods=["GET"]),
        Route("/admin/process", reads.process, methods=["GET"]),
        Route("/admin/cells/{index}/kill", actions.kill_cell, methods=["POST"]),
        Route("/admin/cells/restart", actions.restart_cells, methods=["POST"]),
        Route("/admin/cells/{index}/memory-pressure", actions.memory_pressure, methods=["POST"]),
        Route("/admin/reset", actions.reset, methods=["POST"]),
        Route("/admin/lease", actions.lease_endpoint, methods=["GET", "POST"]),
        Route("/admin/correlation", reads.correlation),
        Route("/admin/metastable", reads.metastable),
        Route("/admin/metastable/resume", actions.resume_recovery, methods=["POST"]),
        Route("/admin/state", reads.state),
        Route("/admin/events", reads.events),
        Route("/admin/increase", reads.increase),
        Route("/admin/lost-writes", reads.lost_writes),
    ]
    # The live dashboard page and its data (behind the admin token): app/dashboard.py.
    return routes + dashboard_routes(token)
