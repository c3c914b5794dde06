"""The gateway's data plane: users' requests to their home cell, the shared dependency the
cells call, /metrics, and the relay of /admin to the admin listener.

Runs on the main thread's event loop, which owns the gateway's defenses (app/gateway_defenses.py)
and its two clients: ``cells_client`` for users' requests (the hot path: aiohttp,
app/cell_client.py) and ``client`` for the signal pushes, lost-write lookups and the admin
relay. Its periodic work: the synchronization loop (the cells' correlation on the shared
dependency, pushed to every cell), the lost-write watch, and the snapshot it publishes for
the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import time
from collections.abc import AsyncIterator

import httpx
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chaosemergence.app.cell_client import CellAnswer, CellClient, CellError, CellUnreachable
from chaosemergence.app.gateway_context import GatewayContext, bad_request, cancel_tasks, every
from chaosemergence.defenses import CircuitOpenError
from chaosemergence.observe.lost_writes import CHECK_SECONDS, LostWriteWatch

__all__ = ["ADMIN_RELAY_TIMEOUT", "DataPlane"]

# Relaying /admin from the data-plane listener to the admin listener (a reset that restarts
# dead cells waits for them to be ready: up to 30 s).
ADMIN_RELAY_TIMEOUT = 40.0
# How often the data plane publishes what the admin API reads of its state.
PUBLISH_SECONDS = 0.25
SYNC_SECONDS = 1.0
RELAYED_REQUEST_HEADERS = ("authorization", "content-type", "accept")
RELAYED_ANSWER_HEADERS = ("content-type", "www-authenticate", "retry-after", "cache-control")


class DataPlane:
    """The data-plane listener's handlers, its periodic work and its lifespan."""

    def __init__(self, context: GatewayContext) -> None:
        self.context = context
        settings = context.settings
        self.cells_client = CellClient(settings.cell_timeout_seconds)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.cell_timeout_seconds, connect=1.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=64),
        )
        self.lost_watch = LostWriteWatch(context.payments.by_cell)
        for index in range(settings.cells):
            context.metrics.writes_lost.labels(str(index)).set(0)
        self.stall_seconds = settings.gateway_stall_ms / 1000

    # Users' requests.

    async def profile(self, request: Request) -> Response:
        return await self.forward(request, "profile")

    async def payments(self, request: Request) -> Response:
        return await self.forward(request, "payments")

    async def recommendations(self, request: Request) -> Response:
        return await self.forward(request, "recommendations")

    async def forward(self, request: Request, route: str) -> Response:
        """Send a user's request to their home cell (cellular) or any live one (shared)."""
        if self.stall_seconds:
            # TEST ONLY (gateway_stall_ms): hold the loop as a saturated one is held.
            until = time.perf_counter() + self.stall_seconds
            while time.perf_counter() < until:
                pass
        ctx = self.context
        user_id = request.path_params["user_id"]
        home = ctx.defenses.routing.home(user_id)
        body = await request.body()
        started = time.perf_counter()
        cell, status, content, retry_after = await self._try_cells(
            request, route, user_id, home, body
        )
        elapsed = time.perf_counter() - started
        if status >= 500 and ctx.defenses.routing.cellular and ctx.settings.cells > 1:
            ctx.defenses.note_containment(home)
        # 429: the cell's load shedder dropped low-priority work on purpose ("shed").
        outcome = "failure" if status >= 500 else "shed" if status == 429 else "success"
        # Counted against the user's home cell: "users of cell k" is what failure radius means.
        ctx.metrics.requests.labels(route, str(home), outcome).inc()
        ctx.metrics.latency.labels(route).observe(elapsed)
        if route == "payments":
            key = _acknowledged_key(content)
            if key:
                ctx.payments.add(cell, key)
        extra = {"Retry-After": retry_after} if status in (429, 503) else {}
        return Response(content, status_code=status, media_type="application/json", headers=extra)

    async def _try_cells(
        self, request: Request, route: str, user_id: str, home: int, body: bytes
    ) -> tuple[int, int, bytes, str]:
        """The cell that answered last, and its status, body and Retry-After.

        Cellular: the home cell only, retried in place. Shared mode (cellular_routing off):
        fail over through every live instance. Either way, with the retry budget on, a retry
        is sent only while the budget allows it.
        """
        ctx = self.context
        defenses, metrics, cells = ctx.defenses, ctx.metrics, ctx.supervisor.cells
        status, content, retry_after = 503, b"", "1"
        content_type = request.headers.get("content-type")
        tries = defenses.routing.candidates(user_id, lambda c: cells[c].available)
        if len(tries) == 1:
            tries = tries * ctx.settings.gateway_retry_attempts
        defenses.retry_budget.record_request()
        cell = home
        for attempt, cell in enumerate(tries):
            target = cells[cell]
            if attempt:
                if not defenses.retry_budget.can_retry():
                    metrics.gateway_retries_refused.inc()
                    break
                metrics.gateway_retries.inc()
            if not target.available:
                # The supervisor holds the cell's socket: don't queue on a dead process.
                # (A cell restarting on its own is available: its backlog holds the request.)
                content = f'{{"error": "cell {cell} is down"}}'.encode()
                continue
            url = f"{target.url}/users/{user_id}/{route}"
            try:
                # The cell's breaker: only a cell that does not answer is a failure to it.
                send = functools.partial(self._send, request.method, url, body, content_type)
                answer = await defenses.breakers[cell].call(send)
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
        return cell, status, content, retry_after

    async def _send(
        self, method: str, url: str, body: bytes, content_type: str | None
    ) -> CellAnswer:
        try:
            return await self.cells_client.send(method, url, body, content_type)
        except CellUnreachable:
            # A draining cell closed this kept-alive connection (or its socket refused): the
            # request never reached it. Send it once more (the next process takes it).
            self.context.metrics.reconnects.inc()
            return await self.cells_client.send(method, url, body, content_type)

    async def config_read(self, request: Request) -> Response:
        """A user's read of the shared configuration, served by the gateway's shared host."""
        ctx = self.context
        home = ctx.defenses.routing.home(request.path_params["user_id"])
        started = time.perf_counter()
        status, answer = await ctx.shared.read()
        outcome = "failure" if status >= 500 else "success"
        ctx.metrics.requests.labels("config", str(home), outcome).inc()
        ctx.metrics.latency.labels("config").observe(time.perf_counter() - started)
        extra = {"Retry-After": "1"} if status == 503 else {}
        return JSONResponse(answer, status_code=status, headers=extra)

    async def shared_call(self, request: Request) -> Response:
        """A cell's call to the shared dependency the gateway hosts."""
        ctx = self.context
        cell = request.path_params["cell"]
        if not 0 <= cell < ctx.settings.cells:
            return bad_request(f"cell must be an index in 0..{ctx.settings.cells - 1}, got {cell}")
        status, answer = await ctx.shared.call(cell)
        ctx.metrics.shared_calls.labels(str(cell), answer["result"]).inc()
        return JSONResponse(answer, status_code=status)

    # What Prometheus and the browsers read.

    async def metrics_endpoint(self, _: Request) -> Response:
        return Response(generate_latest(self.context.registry), media_type=CONTENT_TYPE_LATEST)

    async def targets(self, _: Request) -> Response:
        """Prometheus file_sd / http_sd format: every process's /metrics."""
        settings, cells = self.context.settings, self.context.supervisor.cells
        urls = [f"{settings.host}:{settings.port}"] + [c.url.removeprefix("http://") for c in cells]
        return JSONResponse([{"targets": urls, "labels": {"job": "chaosemergence"}}])

    async def relay_admin(self, request: Request) -> Response:
        """Data-plane listener: pass an /admin or /dashboard call on to the admin listener."""
        admin_url = self.context.admin_url
        if not admin_url:
            return JSONResponse({"error": "the admin listener is not up"}, status_code=503)
        forwarded = {
            k: v for k, v in request.headers.items() if k.lower() in RELAYED_REQUEST_HEADERS
        }
        try:
            answer = await self.client.request(
                request.method,
                f"{admin_url[0]}{request.url.path}",
                params=request.query_params,
                content=await request.body(),
                headers=forwarded,
                timeout=ADMIN_RELAY_TIMEOUT,
            )
        except httpx.HTTPError as error:
            body = {"error": f"admin listener unreachable: {type(error).__name__}"}
            return JSONResponse(body, status_code=502)
        kept = {k: v for k, v in answer.headers.items() if k.lower() in RELAYED_ANSWER_HEADERS}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    # Periodic work on the data-plane loop.

    async def synchronization(self) -> None:
        """Measure the cells' correlation on the shared dependency; tell every live cell."""
        ctx = self.context
        reading = ctx.shared.loop_reading()
        ctx.metrics.correlation.set(reading["correlation"])
        ctx.metrics.peak_to_mean.set(reading["peak_to_mean"])
        down = sum(1 for c in ctx.supervisor.cells if not c.available)
        payload = {
            "correlation": min(1.0, max(0.0, reading["correlation"])),
            "unhealthy_cells": down / ctx.settings.cells,
        }
        await ctx.fleet.push_signals(payload, via=self.client)

    async def missing_keys(self, index: int, keys: list[str]) -> list[str] | None:
        """The keys among `keys` cell `index`'s database lacks (None: it did not answer)."""
        answer = await self.context.fleet.missing_payments(index, keys, via=self.client)
        found = answer.get("missing") if isinstance(answer, dict) else None
        return [str(k) for k in found] if isinstance(found, list) else None

    async def watch_lost_writes(self) -> None:
        for index, lost in (await self.lost_watch.check(self.missing_keys)).items():
            self.context.metrics.writes_lost.labels(str(index)).set(lost)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        handoff, defenses = self.context.handoff, self.context.defenses
        handoff.attach(asyncio.get_running_loop())
        defenses.publish()
        loops = [
            asyncio.create_task(every(SYNC_SECONDS, self.synchronization, "synchronization")),
            asyncio.create_task(every(CHECK_SECONDS, self.watch_lost_writes, "lost writes")),
            asyncio.create_task(every(PUBLISH_SECONDS, defenses.publish, "publish")),
        ]
        try:
            yield
        finally:
            await cancel_tasks(loops)
            handoff.attach(None)
            await self.client.aclose()
            await self.cells_client.aclose()
            await self.context.shared.dependency.aclose()


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
