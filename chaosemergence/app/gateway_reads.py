"""The gateway's admin API, its reads: state, events, counter increases, lost writes, the
shared dependency's correlation, metastability, the processes, the contract, health.

Runs on the admin listener's own thread and event loop (app/admin_server.py), like the
actions (app/gateway_admin.py). What the data-plane loop owns it reads from the snapshot
that loop publishes (``GatewayDefenses.published``), never by waiting on that loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chaosemergence.app.gateway_context import GatewayContext, bad_request
from chaosemergence.app.process import process_figures
from chaosemergence.app.switches import ALL_DEFENSES

__all__ = ["AdminReads"]


class AdminReads:
    """The admin API's handlers that only read (and the gateway's /health, on both listeners)."""

    def __init__(self, context: GatewayContext) -> None:
        self.context = context
        # The admin API's OpenAPI document (the contract: what the handlers check).
        self._document = context.contract.document(ALL_DEFENSES)

    async def health(self, _: Request) -> Response:
        ctx = self.context
        alive = sum(1 for c in ctx.supervisor.cells if c.alive)
        return JSONResponse({"status": "ok", "cells": ctx.settings.cells, "alive": alive})

    async def openapi(self, _: Request) -> Response:
        """The admin API's OpenAPI document (the contract: what the handlers check)."""
        return JSONResponse(self._document)

    async def state(self, _: Request) -> Response:
        ctx = self.context
        results = await ctx.fleet.fan_out("GET", "/admin/state")
        cells = [
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
            for c in ctx.supervisor.cells
        ]
        return JSONResponse(
            {"started_at": ctx.started_at, "gateway": self._gateway_state(), "cells": cells}
        )

    def _gateway_state(self) -> dict[str, Any]:
        """The gateway's part of /admin/state: its defenses, lease and shared dependency."""
        ctx = self.context
        switched = ctx.switches.copy()
        # The data plane's published snapshot, with the switches as the admin API last set
        # them (a change handed to a busy loop is already what its next request sees).
        snapshot = ctx.defenses.published
        budget = dict(snapshot["retry_budget"] or {})
        budget["enabled"] = switched["retry_budget"]
        breakers = {
            i: {**b, "enabled": switched["circuit_breaker"]}
            for i, b in (snapshot["breakers"] or {}).items()
        }
        at = snapshot["at"]
        return {
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
            "lease": ctx.lease.view(),
            "cells": ctx.settings.cells,
            "shared_dependency": ctx.shared.state(),
            "desired": {
                "switches": dict(ctx.supervisor.desired_switches),
                "jitter_removed": ctx.supervisor.desired_jitter_removed,
            },
        }

    async def events(self, request: Request) -> Response:
        ctx = self.context
        try:
            after = ctx.contract.check_query_number(
                request.query_params.get("since"), "since", ctx.contract.since, 0.0
            )
        except ValueError as error:
            return bad_request(error)
        results = await ctx.fleet.fan_out("GET", "/admin/events", params={"since": after})
        merged: list[dict[str, Any]] = [
            {**event, "cell": index}
            for index, answer in results.items()
            if isinstance(answer, list)
            for event in answer
        ]
        merged += [{**e.as_dict(), "cell": "gateway"} for e in ctx.defenses.events.since(after)]
        merged.sort(key=lambda e: e["at"])
        # Cells whose events are missing from this answer (down, or no answer in time).
        unanswered = {str(i): a["error"] for i, a in results.items() if isinstance(a, dict)}
        return JSONResponse(
            {"started_at": ctx.started_at, "events": merged, "unanswered": unanswered}
        )

    async def increase(self, request: Request) -> Response:
        ctx = self.context
        try:
            seconds = ctx.contract.check_query_number(
                request.query_params.get("seconds"), "seconds", ctx.contract.seconds, 30.0
            )
        except ValueError as error:
            return bad_request(error)
        results = await ctx.fleet.fan_out("GET", "/admin/increase", params={"seconds": seconds})
        samples = ctx.window.increase(seconds)
        for answer in results.values():
            if isinstance(answer, list):
                samples.extend(answer)
        unanswered = {str(i): a["error"] for i, a in results.items() if isinstance(a, dict)}
        return JSONResponse({"seconds": seconds, "samples": samples, "unanswered": unanswered})

    async def lost_writes(self, _: Request) -> Response:
        ctx = self.context
        per_cell: dict[str, Any] = {}
        total = 0
        for index, keys in ctx.payments.copy().items():
            if not keys:
                continue
            answer = await ctx.fleet.missing_payments(index, sorted(keys))
            if "error" in answer:
                per_cell[str(index)] = answer
                continue
            per_cell[str(index)] = {"acknowledged": len(keys), "missing": len(answer["missing"])}
            total += len(answer["missing"])
        return JSONResponse({"lost_writes": total, "cells": per_cell})

    async def correlation(self, request: Request) -> Response:
        ctx = self.context
        try:
            seconds = ctx.contract.check_query_number(
                request.query_params.get("window"), "window", ctx.contract.window, 30.0
            )
        except ValueError as error:
            return bad_request(error)
        buckets, series = ctx.shared.snapshot_series(seconds)
        # Pairwise correlations over a long window take a while: off the event loop.
        return JSONResponse(await asyncio.to_thread(ctx.shared.reading, buckets, series))

    async def metastable(self, _: Request) -> Response:
        results = await self.context.fleet.fan_out("GET", "/admin/metastable")
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

    async def process(self, _: Request) -> Response:
        """Each process's resident memory, descriptors, threads and asyncio tasks."""
        results = await self.context.fleet.fan_out("GET", "/admin/process")
        gateway_figures = await asyncio.to_thread(process_figures)
        gateway_figures["tasks"] = {
            "admin": len(asyncio.all_tasks()),
            "data_plane": self.context.defenses.published.get("tasks"),
        }
        return JSONResponse(
            {
                "gateway": gateway_figures,
                "cells": {str(i): r for i, r in sorted(results.items())},
            }
        )
