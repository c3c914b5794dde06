"""The gateway's admin API, its actions: what changes the system (faults, switches, jitter,
the lease, kills, restarts, memory pressure, reset, recovery).

Runs on the admin listener's own thread and event loop (app/admin_server.py). Every call is
validated once here (the contract, chaosemergence/contract.py), then fanned out to the live
cells (app/gateway_fleet.py). What the data-plane loop owns (the gateway's breakers and
retry budget) is changed by handing the change to that loop (app/handoff.py). Its periodic
work: the metric window (1 s), the supervisor's monitor (0.1 s) and the lease (0.25 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chaosemergence.app.cell_app import json_body
from chaosemergence.app.gateway_context import GatewayContext, bad_request, cancel_tasks, every
from chaosemergence.app.switches import ALL_DEFENSES, DEFENSES
from chaosemergence.app.sync import SHARED_DEPENDENCY
from chaosemergence.contract import check, check_lease_seconds, check_pressure

__all__ = ["AdminActions"]

logger = logging.getLogger("chaosemergence.gateway")

# How often the admin loop looks at the lease (and retries a restore cells missed).
LEASE_CHECK_SECONDS = 0.25
MONITOR_SECONDS = 0.1
WINDOW_SECONDS = 1.0


class AdminActions:
    """The admin API's handlers that change the system, and the admin loop's periodic work."""

    def __init__(self, context: GatewayContext) -> None:
        self.context = context
        self._fault_ids = itertools.count(1)
        self._defenses_schema = context.contract.defenses_schema(ALL_DEFENSES)
        # The lease expired and some live cell has not yet acknowledged being put back.
        self._restore_pending = False

    # Faults.

    async def faults(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.add_fault(request)
        return await self.clear_faults(request)

    async def add_fault(self, request: Request) -> Response:
        ctx = self.context
        try:
            # Every field (every cell index included) is checked before anything is applied.
            normalized, cells = ctx.contract.check_fault(await json_body(request))
        except ValueError as error:
            return bad_request(error)
        fault_id = f"fault-{next(self._fault_ids)}"
        if normalized["dependency"] == SHARED_DEPENDENCY:
            # The shared dependency lives here: every cell that calls it sees the fault.
            ctx.shared.faults.add(normalized, fault_id)
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
        results = await ctx.fleet.fan_out(
            "POST", "/admin/faults", cells, json={**normalized, "id": fault_id}
        )
        applied = [i for i, r in results.items() if "error" not in r]
        # Until it expires or is cleared, a restarted process of a targeted cell (one that was
        # down now included) starts with what is left of it.
        ctx.supervisor.keep_fault(fault_id, cells, normalized)
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

    async def clear_faults(self, request: Request) -> Response:
        ctx = self.context
        fault_id = request.query_params.get("id")
        if fault_id is not None:
            try:
                ctx.contract.check_id(fault_id)
            except ValueError as error:
                return bad_request(error)
        params = {"id": fault_id} if fault_id else None
        ctx.supervisor.forget_faults(fault_id or None, memory=False)
        results = await ctx.fleet.fan_out("DELETE", "/admin/faults", params=params)
        cleared = ctx.shared.faults.clear(fault_id)
        return JSONResponse(
            {"cleared": cleared + sum(r.get("cleared", 0) for r in results.values())}
        )

    async def invalidate(self, _: Request) -> Response:
        results = await self.context.fleet.fan_out("POST", "/admin/cache/invalidate")
        return JSONResponse({"cells": {str(i): r for i, r in results.items()}})

    # Switches: jitter and defenses, under the lease.

    async def jitter(self, request: Request) -> Response:
        ctx = self.context
        try:
            body = check(ctx.contract.switch, await json_body(request))
            seconds = check_lease_seconds(body.get("lease_seconds"), ctx.settings.lease_seconds)
        except ValueError as error:
            return bad_request(error)
        ctx.supervisor.desired_jitter_removed = not body["enabled"]
        held = self.hold_lease(seconds)
        results = await ctx.fleet.fan_out(
            "POST", "/admin/jitter", json={"enabled": body["enabled"]}
        )
        return JSONResponse({"cells": {str(i): r for i, r in results.items()}, "lease": held})

    async def defenses(self, request: Request) -> Response:
        ctx = self.context
        try:
            body = check(self._defenses_schema, await json_body(request))
            enabled, names = body["enabled"], body.get("names")
            seconds = check_lease_seconds(body.get("lease_seconds"), ctx.settings.lease_seconds)
        except ValueError as error:
            return bad_request(error)
        ctx.switches.set(names, enabled)
        ctx.handoff.run(lambda: ctx.defenses.apply(names, enabled))
        # A cell restarted on its own comes back with the switches it was last given.
        for name in [n for n in names or DEFENSES if n in DEFENSES]:
            if enabled:
                ctx.supervisor.desired_switches.pop(name, None)
            else:
                ctx.supervisor.desired_switches[name] = False
        held = self.hold_lease(seconds)
        cell_names = None if names is None else [n for n in names if n in DEFENSES]
        results = (
            await ctx.fleet.fan_out(
                "POST", "/admin/defenses", json={"enabled": enabled, "names": cell_names}
            )
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

    def weakened(self) -> bool:
        """Is any defense switched off, or the jitter removed, by the admin API?"""
        supervisor = self.context.supervisor
        gateway_off = self.context.switches.any_off()
        return bool(supervisor.desired_switches or supervisor.desired_jitter_removed or gateway_off)

    def hold_lease(self, seconds: float) -> dict[str, Any]:
        """After a switch: hold the lease while something is weakened, else release it."""
        lease = self.context.lease
        self._restore_pending = False  # a new instruction supersedes a pending restore
        if self.weakened():
            lease.take(seconds)
        else:
            lease.release()
        return lease.view()

    async def lease_endpoint(self, request: Request) -> Response:
        """GET: the lease; POST {"seconds": s}: renew it (a no-op when nothing is held)."""
        ctx = self.context
        if request.method == "POST":
            try:
                body = check(ctx.contract.renewal, await json_body(request))
                seconds = check_lease_seconds(
                    body.get("seconds"), ctx.settings.lease_seconds, "seconds"
                )
            except ValueError as error:
                return bad_request(error)
            ctx.lease.renew(seconds)
        return JSONResponse(ctx.lease.view())

    async def lease_tick(self) -> None:
        """Admin loop: an expired lease puts every defense back on (retried until it holds)."""
        lease = self.context.lease
        if lease.expired():
            lease.release()
            lease.expirations += 1
            self._restore_pending = True
            self.context.defenses.events.record(
                "lease",
                "activated",
                "the lease on weakened defenses expired unrenewed: every defense back on, "
                "jitter restored",
            )
            logger.warning("lease expired: putting every defense back on, jitter back")
        if self._restore_pending:
            self._restore_pending = not await self.restore_defended()

    async def restore_defended(self) -> bool:
        """Every defense on and the jitter back, everywhere; False if a live cell missed it."""
        ctx = self.context
        ctx.supervisor.desired_switches.clear()
        ctx.supervisor.desired_jitter_removed = False
        ctx.switches.all_on()
        ctx.handoff.run(lambda: ctx.defenses.apply(None, True))
        on = await ctx.fleet.fan_out(
            "POST", "/admin/defenses", json={"enabled": True, "names": None}
        )
        back = await ctx.fleet.fan_out("POST", "/admin/jitter", json={"enabled": True})
        missed = [
            i
            for i in range(ctx.settings.cells)
            if ctx.supervisor.cells[i].alive and ("error" in on[i] or "error" in back[i])
        ]
        return not missed

    # Processes: kill, restart, memory pressure, reset, recovery.

    async def kill_cell(self, request: Request) -> Response:
        ctx = self.context
        try:
            index = ctx.contract.check_index(request.path_params["index"])
        except ValueError as error:
            return bad_request(error)
        cell = ctx.supervisor.cells[index]
        if cell.remote_url is not None:
            message = f"cell {index} runs elsewhere ({cell.url}): stop it where it runs"
            return JSONResponse({"error": message}, status_code=409)
        killed = await asyncio.to_thread(ctx.supervisor.kill, index)
        return JSONResponse({"cell": index, "killed": killed})

    async def restart_cells(self, _: Request) -> Response:
        restarted = await asyncio.to_thread(self.context.supervisor.restart_dead)
        return JSONResponse({"restarted": restarted})

    async def memory_pressure(self, request: Request) -> Response:
        ctx = self.context
        try:
            index = ctx.contract.check_index(request.path_params["index"])
            rate, duration = check_pressure(await json_body(request))
        except ValueError as error:
            return bad_request(error)
        if not ctx.supervisor.cells[index].alive:
            return JSONResponse({"error": f"cell {index} is down"}, status_code=409)
        body = {"megabytes_per_second": rate, "duration": duration}
        path = "/admin/memory-pressure"
        answer = (await ctx.fleet.fan_out("POST", path, [index], json=body))[index]
        if "error" in answer:
            return JSONResponse({"cell": index, **answer}, status_code=502)
        # The leak outlives a restart of the cell's process until it expires (or a reset).
        ctx.supervisor.keep_memory_pressure(index, rate, duration)
        return JSONResponse({**answer, "expires_at": time.time() + duration}, status_code=201)

    async def reset(self, _: Request) -> Response:
        ctx = self.context
        # Before anything else: a restarted cell must come back with every defense on.
        ctx.supervisor.desired_switches.clear()
        ctx.supervisor.desired_jitter_removed = False
        ctx.supervisor.forget_faults()
        ctx.lease.release()
        self._restore_pending = False
        ctx.switches.all_on()
        ctx.handoff.run(ctx.defenses.reset)
        ctx.shared.reset()
        restarted = await asyncio.to_thread(ctx.supervisor.restart_dead)
        results = await ctx.fleet.fan_out("POST", "/admin/reset")
        return JSONResponse(
            {"restarted": restarted, "cells": {str(i): r for i, r in results.items()}}
        )

    async def resume_recovery(self, request: Request) -> Response:
        """An operator's answer to cells whose recovery asked for manual intervention."""
        ctx = self.context
        try:
            body = check(ctx.contract.resume, await json_body(request))
            cells = ctx.contract.check_cells(body.get("cells"))
            reason = body.get("reason", "resumed by an operator (admin API)")
        except ValueError as error:
            return bad_request(error)
        path = "/admin/metastable/resume"
        results = await ctx.fleet.fan_out("POST", path, cells, json={"reason": reason})
        resumed = [
            i for i, r in sorted(results.items()) if isinstance(r, dict) and r.get("resumed")
        ]
        return JSONResponse(
            {"resumed": resumed, "cells": {str(i): r for i, r in sorted(results.items())}}
        )

    # Periodic work on the admin loop.

    def monitor(self) -> None:
        """Reap exited cells (restarting those that asked for it); publish who is up."""
        ctx = self.context
        for ended in ctx.supervisor.reap():
            logger.warning("cell %s exited (%s, code %s)", ended.cell, ended.reason, ended.code)
            ctx.metrics.cell_exits.labels(str(ended.cell), ended.reason).inc()
        for cell in ctx.supervisor.cells:
            ctx.metrics.cell_up.labels(str(cell.index)).set(1.0 if cell.available else 0.0)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        loops = [
            asyncio.create_task(every(WINDOW_SECONDS, self.context.window.tick, "metric window")),
            asyncio.create_task(every(MONITOR_SECONDS, self.monitor, "monitor")),
            asyncio.create_task(every(LEASE_CHECK_SECONDS, self.lease_tick, "lease")),
        ]
        try:
            yield
        finally:
            await cancel_tasks(loops)
            await self.context.fleet.admin_client.aclose()
