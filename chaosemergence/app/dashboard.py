"""The live dashboard: the seed's seven views, assembled from the gateway's admin API.

`GET /dashboard` is a static page (HTML, CSS and a small script written for this project,
charts drawn as SVG; nothing is fetched from anywhere but the gateway). It polls
`GET /admin/dashboard`, which sits in the admin API on purpose: the frame exposes the
whole defense picture (faults, switches, breakers), so it needs the admin token like every
other `/admin` path. The page takes the token from its URL fragment (`#token=...`, never
sent to the server) or from a form, and keeps it in the tab's sessionStorage.

A frame is assembled from the same endpoints the probes read, called in-process through
the gateway's own ASGI app (no network hop, the same auth): `/admin/state`,
`/admin/events` and `/admin/increase` (30 s window). Frames are cached for
`FRAME_SECONDS`, so any number of watchers costs one fan-out to the cells per second, and
nothing is collected while nobody watches: the history of the time series starts when the
first watcher does (the incident timeline does not: the cells keep their events).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from chaosemergence.app.admission import ROUTE_CLASSES
from chaosemergence.defenses.control import (
    CRITICAL_FEATURES,
    EMERGENCY,
    GREEN,
    PATTERNS,
    RED,
    RESTORE_STEPS,
    YELLOW,
)
from chaosemergence.measure import (
    bucket_counts,
    histogram_quantile,
    percent_failed,
    samples_total,
)

__all__ = ["FRAME_SECONDS", "Dashboard", "dashboard_routes", "describe_event"]

logger = logging.getLogger("chaosemergence.dashboard")

#: A frame is reused by every poll within this many seconds.
FRAME_SECONDS = 1.0
#: The window of the rates and percentiles (the probes' default window).
WINDOW_SECONDS = 30.0
#: Points of history kept (one per frame): ten minutes at one frame a second.
HISTORY_POINTS = 600
#: Incidents shown, newest first; events of one defense in one cell this close together
#: are one incident (a burst), counted.
MAX_INCIDENTS = 60
BURST_SECONDS = 10.0
PRIORITY_ORDER = ("critical", "high", "medium", "low")
SHED_LEVELS = (GREEN, YELLOW, RED, EMERGENCY)
ASSEMBLY_TIMEOUT = 15.0


def _f(value: Any, default: float = 0.0) -> float:
    """A JSON number as a finite float (NaN, None and junk become `default`)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _percent_failed(samples: list[dict[str, Any]], **labels: str) -> tuple[float, float]:
    """(requests, % failed) as `measure_failure_radius` counts them."""
    return samples_total(samples, "emergence_requests_total", **labels), percent_failed(
        samples, **labels
    )


def describe_event(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(category, sentence) for a defense activation worth a line in the timeline, or None.

    Categories: `prevented` (a defense acted), `detected` (the control loop recognised a
    pattern), `operator` (a recovery that needs a person).
    """
    if event.get("kind") != "activated":
        return None
    defense = str(event.get("defense", ""))
    detail = event.get("detail") or {}
    reason = str(event.get("reason", ""))
    cell = event.get("cell")
    if defense == "breaker_trip":
        return (
            "prevented",
            f"Blocked a retry storm: breaker {detail.get('breaker', '?')} tripped "
            f"{detail.get('previous', '?')} \u2192 {detail.get('state', '?')}",
        )
    if defense == "circuit_breaker":
        return None  # the same moment as its breaker_trip event
    if defense == "retry_budget":
        return "prevented", f"Blocked a retry storm: retry budget refused retries ({reason})"
    if defense == "adaptive_throttle":
        return "prevented", f"Throttled calls to a failing backend locally ({reason})"
    if defense == "request_coalescing":
        return "prevented", "Prevented a stampede: concurrent misses shared one computation"
    if defense == "cache_prewarming":
        return "prevented", f"Prevented a stampede: {reason}"
    if defense == "stampede_protection":
        return "prevented", f"Stampede protection on: {reason}"
    if defense == "early_expiration":
        return "prevented", "Refreshed hot keys before expiry (XFetch): no miss storm"
    if defense in ("jitter", "precompute_jitter"):
        return "prevented", f"Broke synchronization with jitter ({reason})"
    if defense == "cellular_routing":
        return "prevented", f"Isolated cell {detail.get('cell', cell)}'s failure"
    if defense == "boundary_reinforcement":
        return "prevented", f"Reinforced cell {cell}'s boundary ({reason})"
    if defense == "load_shedding":
        fraction = _f(detail.get("fraction"))
        return "prevented", f"Shed {fraction:.0%} of low-priority load ({reason})"
    if defense == "metastable_detector":
        return "detected", f"Metastable state detected ({reason})"
    if defense == "metastable_recovery":
        return "prevented", f"Escaping a metastable state: {reason}"
    if defense == "manual_intervention":
        return "operator", f"Recovery needs an operator: {reason}"
    if defense in ("memory_guardrail", "gc_breaker", "predictive_restart"):
        return "prevented", f"Stopped a death spiral ({defense.replace('_', ' ')}: {reason})"
    if defense == "stale_fallback":
        return "prevented", f"Served stale profiles instead of failing ({reason})"
    if defense.startswith("pattern:"):
        name = defense.removeprefix("pattern:").replace("_", " ")
        return "detected", f"Detected {name} (probability {_f(detail.get('probability')):.0%})"
    if defense == "phase_defenses":
        return "detected", f"Phase-transition defenses up ({reason})"
    return "prevented", f"{defense.replace('_', ' ')}: {reason}"


class Dashboard:
    """Assembles frames from the admin API and keeps their history and the incidents."""

    def __init__(self, token: str, *, clock: Any = time.time) -> None:
        self._headers = {"Authorization": f"Bearer {token}"}
        self._clock = clock
        self._lock = asyncio.Lock()
        self._frame: dict[str, Any] | None = None
        self._frame_at = -math.inf
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.incidents: deque[dict[str, Any]] = deque(maxlen=MAX_INCIDENTS * 4)
        self._seen: set[tuple[Any, ...]] = set()
        self._seen_order: deque[tuple[Any, ...]] = deque()
        self._last_event_at = 0.0
        # (time, cumulative coalesced requests) per cell, for "saved N computations".
        self._coalesced: dict[str, deque[tuple[float, float]]] = {}

    async def frame(self, app: Any) -> dict[str, Any]:
        """The current frame (cached for FRAME_SECONDS)."""
        async with self._lock:
            if self._frame is not None and self._clock() - self._frame_at < FRAME_SECONDS:
                return self._frame
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://gateway",
                headers=self._headers,
                timeout=ASSEMBLY_TIMEOUT,
            ) as client:
                since = max(0.0, self._last_event_at - BURST_SECONDS)
                state, events, increase = await asyncio.gather(
                    client.get("/admin/state"),
                    client.get("/admin/events", params={"since": since}),
                    client.get("/admin/increase", params={"seconds": WINDOW_SECONDS}),
                )
            self._frame = self.assemble(state.json(), events.json(), increase.json())
            self._frame_at = self._clock()
            return self._frame

    # ------------------------------------------------------------------ assembly
    def assemble(
        self, state: dict[str, Any], events: dict[str, Any], increase: dict[str, Any]
    ) -> dict[str, Any]:
        now = self._clock()
        samples: list[dict[str, Any]] = increase.get("samples") or []
        gateway = state.get("gateway") or {}
        cells: list[dict[str, Any]] = state.get("cells") or []
        # A cell that is down (or did not answer) has {"error": ...} or nothing: no state.
        bodies = {str(c["index"]): _cell_body(c) for c in cells}
        requests, radius = _percent_failed(samples)
        p99 = histogram_quantile(0.99, bucket_counts(samples, "emergence_request_duration_seconds"))
        system = {
            "requests": requests,
            "requests_per_second": round(requests / WINDOW_SECONDS, 2),
            "failure_radius_pct": round(radius, 3),
            "success_rate_pct": round(100.0 - radius, 3) if requests else None,
            "p99_ms": None if math.isnan(p99) else round(p99 * 1000.0, 1),
            "goodput_rps": round(
                samples_total(samples, "emergence_requests_total", outcome="success")
                / WINDOW_SECONDS,
                2,
            ),
            "cells_up": sum(1 for c in cells if c.get("alive")),
            "cells_total": len(cells),
        }
        self._track_coalesced(now, bodies)
        self._ingest(events.get("events") or [], samples, now)
        views = {
            "breakers": self._breakers(gateway, cells, bodies, samples),
            "complexity": self._complexity(bodies, samples),
            "coalescing": self._coalescing(bodies, samples),
            "synchronization": self._synchronization(gateway, bodies),
            "cascade": self._cascade(gateway, cells, bodies, samples, system),
            "metastable": self._metastable(bodies),
            "patterns": self._patterns(bodies),
        }
        point = {
            "at": round(now, 3),
            "correlation": views["synchronization"]["correlation"],
            "peak_to_mean": views["synchronization"]["peak_to_mean"],
            "p99_ms": system["p99_ms"],
            "failure_radius_pct": system["failure_radius_pct"],
            "cells_up": system["cells_up"],
        }
        self.history.append(point)
        return {
            "at": now,
            "started_at": state.get("started_at"),
            "window_seconds": WINDOW_SECONDS,
            "system": system,
            **views,
            "defenses": self._defenses(gateway, cells, bodies, views),
            "incidents": list(self.incidents)[-MAX_INCIDENTS:][::-1],
            "history": list(self.history),
        }

    @staticmethod
    def _breakers(
        gateway: dict[str, Any],
        cells: list[dict[str, Any]],
        bodies: dict[str, dict[str, Any] | None],
        samples: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """Per cell: the gateway's breaker in front of it and the cell's own breakers."""
        out = []
        gateway_breakers = gateway.get("breakers") or {}
        for entry in cells:
            index = str(entry["index"])
            body = bodies.get(index) or {}
            requests, radius = _percent_failed(samples, cell=index)
            trips: dict[str, int] = {}
            for key, count in (body.get("breaker_trips") or {}).items():
                name = str(key).split(":", 1)[0]
                trips[name] = trips.get(name, 0) + int(count)
            rows = []
            front = gateway_breakers.get(index)
            if isinstance(front, dict):
                rows.append(_breaker_row("gateway", f"gateway.cell{index}", front, None))
            for name, snap in sorted((body.get("breakers") or {}).items()):
                if isinstance(snap, dict):
                    rows.append(_breaker_row(name, str(snap.get("name")), snap, trips.get(name, 0)))
            inputs = (body.get("control_loop") or {}).get("inputs") or {}
            out.append(
                {
                    "cell": int(entry["index"]),
                    "alive": bool(entry.get("alive")),
                    "requests": requests,
                    "success_rate_pct": round(100.0 - radius, 2) if requests else None,
                    "p99_ms": round(_f(inputs.get("p99_ms")), 1) if body else None,
                    "trips": sum(trips.values()),
                    "emergence_risk": max((r["emergence_risk"] for r in rows), default=0.0),
                    "breakers": rows,
                }
            )
        return {"cells": out}

    @staticmethod
    def _complexity(
        bodies: dict[str, dict[str, Any] | None], samples: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """The complexity score and shedding level per cell; which priorities each sheds."""
        out: list[dict[str, Any]] = []
        for index, body in sorted(bodies.items(), key=lambda kv: int(kv[0])):
            if not body:
                out.append({"cell": int(index), "alive": False})
                continue
            shedding = body.get("load_shedding") or {}
            level = str(shedding.get("level", "green"))
            shed_priorities = _level_priorities(level)
            out.append(
                {
                    "cell": int(index),
                    "alive": True,
                    "score": round(_f(shedding.get("score")), 4),
                    "level": level,
                    "shed_fraction": _f(shedding.get("shed_fraction")),
                    "shed_priorities": shed_priorities,
                    "degraded": bool(shedding.get("degraded")),
                    "refused": shedding.get("refused") or {},
                    "shed_window": samples_total(
                        samples, "emergence_requests_total", outcome="shed", cell=index
                    ),
                }
            )
        routes = {
            route: {
                "priority": rc.priority,
                "feature": rc.feature,
                "preserved": rc.priority == "critical" or rc.feature in CRITICAL_FEATURES,
                "shed_window": samples_total(
                    samples, "emergence_requests_total", outcome="shed", route=route
                ),
            }
            for route, rc in ROUTE_CLASSES.items()
        }
        levels = [
            {
                "name": lvl.name,
                "shed_fraction": lvl.shed_fraction,
                "priorities": [p for p in PRIORITY_ORDER if p in lvl.priorities],
            }
            for lvl in SHED_LEVELS
        ]
        return {"cells": out, "routes": routes, "levels": levels, "priorities": PRIORITY_ORDER}

    @staticmethod
    def _coalescing(
        bodies: dict[str, dict[str, Any] | None], samples: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Misses (requests needing a computation), computations, reduction, work saved."""
        misses = samples_total(samples, "emergence_cache_requests_total", result="miss")
        computations = samples_total(samples, "emergence_backend_computations_total")
        coalesced = samples_total(samples, "emergence_coalesced_requests_total")
        total = {"requests": 0.0, "computations": 0.0, "coalesced": 0.0, "prewarmed": 0.0}
        for body in bodies.values():
            if body:
                c = body.get("coalescing") or {}
                cache = body.get("cache") or {}
                total["requests"] += _f(cache.get("misses"))
                total["computations"] += _f(c.get("computations"))
                total["coalesced"] += _f(c.get("coalesced"))
                total["prewarmed"] += _f(c.get("prewarm_computations"))

        def reduction(requests: float, computed: float) -> float | None:
            return round(100.0 * (1.0 - computed / requests), 2) if requests else None

        return {
            "window": {
                "requests": misses,
                "computations": computations,
                "coalesced": coalesced,
                "reduction_pct": reduction(misses, computations),
                "work_saved": max(0.0, misses - computations),
            },
            "total": {
                **total,
                "reduction_pct": reduction(total["requests"], total["computations"]),
                "work_saved": max(0.0, total["requests"] - total["computations"]),
            },
        }

    @staticmethod
    def _synchronization(
        gateway: dict[str, Any], bodies: dict[str, dict[str, Any] | None]
    ) -> dict[str, Any]:
        """The gateway's last reading of the cells' load on the shared dependency."""
        shared = gateway.get("shared_dependency") or {}
        reading = shared.get("correlation") or {}
        jitter = [
            {
                "cell": int(index),
                "removed": bool(body.get("jitter_removed")),
                "effective_factor": _f((body.get("jitter") or {}).get("effective_factor")),
                "raised": bool((body.get("jitter") or {}).get("maximum")),
                "naive_timers": bool((body.get("timers") or {}).get("naive")),
            }
            for index, body in sorted(bodies.items(), key=lambda kv: int(kv[0]))
            if body
        ]
        return {
            "correlation": round(_f(reading.get("correlation")), 4),
            "peak_to_mean": round(_f(reading.get("peak_to_mean")), 3),
            "phase_peak_to_mean": round(_f(reading.get("phase_peak_to_mean")), 3),
            "level": reading.get("level"),
            "pair": reading.get("pair"),
            "window": reading.get("window"),
            "jitter": jitter,
        }

    @staticmethod
    def _cascade(
        gateway: dict[str, Any],
        cells: list[dict[str, Any]],
        bodies: dict[str, dict[str, Any] | None],
        samples: list[dict[str, Any]],
        system: dict[str, Any],
    ) -> dict[str, Any]:
        out = []
        for entry in cells:
            index = str(entry["index"])
            body = bodies.get(index) or {}
            boundary = body.get("boundary_reinforcement") or {}
            requests, radius = _percent_failed(samples, cell=index)
            last_exit = entry.get("last_exit") or {}
            out.append(
                {
                    "cell": int(index),
                    "alive": bool(entry.get("alive")),
                    "restarting": bool(entry.get("restarting")),
                    "requests": requests,
                    "failure_radius_pct": round(radius, 2),
                    "isolation_score": round(_f(boundary.get("isolation_score"), 1.0), 3)
                    if body
                    else None,
                    "cascade_risk": round(_f(boundary.get("cascade_risk")), 3) if body else None,
                    "reinforced": bool(boundary.get("reinforced")),
                    "last_exit": last_exit.get("reason"),
                }
            )
        return {
            "cells_up": system["cells_up"],
            "cells_total": system["cells_total"],
            "failure_radius_pct": system["failure_radius_pct"],
            "cellular_routing": bool(gateway.get("cellular_routing")),
            "cells": out,
        }

    @staticmethod
    def _metastable(bodies: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        out = []
        for index, body in sorted(bodies.items(), key=lambda kv: int(kv[0])):
            if not body:
                out.append({"cell": int(index), "alive": False, "stage": "down"})
                continue
            detector = body.get("metastable_detector") or {}
            recovery = body.get("metastable_recovery") or {}
            phase = str(recovery.get("phase", "idle"))
            condition = recovery.get("condition") or detector.get("condition") or {}
            actions = [str(a) for a in (condition.get("actions") or [])]
            done = (body.get("control_loop") or {}).get("recovery_actions") or {}
            out.append(
                {
                    "cell": int(index),
                    "alive": True,
                    "metastable": detector.get("condition") is not None,
                    "phase": phase,
                    "stage": _recovery_stage(phase, actions),
                    "actions": actions,
                    "actions_done": {str(k): int(v) for k, v in done.items()},
                    "step_percent": recovery.get("step_percent"),
                    "admit_fraction": _f(recovery.get("admit_fraction"), 1.0),
                    "relapses": int(_f(recovery.get("relapses"))),
                    "recoveries": int(_f(recovery.get("recoveries"))),
                    "reason": recovery.get("reason") or "",
                    "stuck": [str(s) for s in (condition.get("stuck") or [])],
                }
            )
        return {
            "metastable": any(c.get("metastable") for c in out),
            "steps": list(RESTORE_STEPS),
            "cells": out,
        }

    @staticmethod
    def _patterns(bodies: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
        per_cell: list[dict[str, Any]] = []
        for index, body in sorted(bodies.items(), key=lambda kv: int(kv[0])):
            last = (((body or {}).get("control_loop") or {}).get("loop") or {}).get("last") or {}
            patterns = last.get("patterns") or {}
            per_cell.append(
                {
                    "cell": int(index),
                    "alive": body is not None,
                    "patterns": {p: round(_f(patterns.get(p)), 4) for p in PATTERNS},
                    "phase_risk": round(_f(last.get("phase_risk")), 4),
                }
            )
        live = [c for c in per_cell if c["alive"]]
        return {
            "max": {p: max((c["patterns"][p] for c in live), default=0.0) for p in PATTERNS},
            "phase_risk": max((c["phase_risk"] for c in live), default=0.0),
            "cells": per_cell,
        }

    @staticmethod
    def _defenses(
        gateway: dict[str, Any],
        cells: list[dict[str, Any]],
        bodies: dict[str, dict[str, Any] | None],
        views: dict[str, Any],
    ) -> dict[str, Any]:
        """The seed's "Active defenses" rows, and what the control loops turned up."""
        live = [b for b in bodies.values() if b]
        switches: dict[str, list[bool]] = {}
        for body in live:
            for name, enabled in (body.get("defenses") or {}).items():
                switches.setdefault(str(name), []).append(bool(enabled))
        switches.setdefault("cellular_routing", []).append(bool(gateway.get("cellular_routing")))

        def on(name: str) -> bool:
            return any(switches.get(name, []))

        breaker_rows = [r for c in views["breakers"]["cells"] for r in c["breakers"]]
        not_closed = [r for r in breaker_rows if r["state"] != "closed"]
        levels = [c for c in views["complexity"]["cells"] if c.get("alive")]
        shedding = [c for c in levels if c["shed_fraction"] > 0]
        window = views["coalescing"]["window"]
        sync = views["synchronization"]
        removed = [j for j in sync["jitter"] if j["removed"] or j["naive_timers"]]
        cascade = views["cascade"]
        meta = views["metastable"]
        recovering = [c for c in meta["cells"] if c.get("phase") not in ("idle", None)]
        rows = [
            {
                "name": "circuit_breaker",
                "label": "Circuit breakers",
                "on": on("circuit_breaker"),
                "acting": bool(not_closed),
                "detail": f"{len(breaker_rows)} active, {len(not_closed)} open"
                + (
                    f" ({', '.join(r['name'] + ' ' + r['state'] for r in not_closed[:4])})"
                    if not_closed
                    else ""
                ),
            },
            {
                "name": "load_shedding",
                "label": "Load shedding",
                "on": on("load_shedding"),
                "acting": bool(shedding),
                "detail": (
                    ", ".join(
                        f"cell {c['cell']} {c['level']} {c['shed_fraction']:.0%}" for c in shedding
                    )
                    if shedding
                    else "0% (all features on)"
                ),
            },
            {
                "name": "request_coalescing",
                "label": "Request coalescing",
                "on": on("request_coalescing"),
                "acting": window["coalesced"] > 0,
                "detail": (
                    f"{window['reduction_pct']:.0f}% reduction "
                    f"({window['requests']:.0f} misses -> {window['computations']:.0f} "
                    "computations)"
                    if window["reduction_pct"] is not None
                    else "no cache misses in the window"
                ),
            },
            {
                "name": "jitter",
                "label": "Jitter injection",
                "on": on("jitter"),
                "acting": any(j["raised"] for j in sync["jitter"]),
                "detail": (
                    "all timers randomized"
                    if not removed
                    else f"jitter removed in cells {', '.join(str(j['cell']) for j in removed)}"
                )
                + f" (correlation {sync['correlation']:.2f})",
            },
            {
                "name": "cellular_routing",
                "label": "Cellular isolation",
                "on": bool(gateway.get("cellular_routing")),
                "acting": cascade["cells_up"] < cascade["cells_total"],
                "detail": f"{cascade['cells_up']}/{cascade['cells_total']} cells up, "
                + (
                    "0 cross-cell failover"
                    if gateway.get("cellular_routing")
                    else "failover across cells"
                ),
            },
            {
                "name": "metastable_detector",
                "label": "Metastable monitor",
                "on": on("metastable_detector"),
                "acting": bool(recovering),
                "detail": (
                    ", ".join(f"cell {c['cell']} {c['stage']}" for c in recovering)
                    if recovering
                    else "no death states"
                ),
            },
        ]
        turned_up: dict[str, list[int]] = {}
        for entry in cells:
            body = bodies.get(str(entry["index"])) or {}
            loop = (body.get("control_loop") or {}).get("loop") or {}
            for name in loop.get("active") or []:
                turned_up.setdefault(str(name), []).append(int(entry["index"]))
        flat = [v for values in switches.values() for v in values]
        return {
            "rows": rows,
            "switches": {name: sum(v) for name, v in sorted(switches.items())},
            "switched_on_pct": round(100.0 * sum(flat) / len(flat), 1) if flat else 0.0,
            "control_loop_active": turned_up,
            "cells_reporting": len(live),
        }

    # ------------------------------------------------------------------ incidents
    def _track_coalesced(self, now: float, bodies: dict[str, dict[str, Any] | None]) -> None:
        for index, body in bodies.items():
            if body:
                value = _f((body.get("coalescing") or {}).get("coalesced"))
                series = self._coalesced.setdefault(index, deque(maxlen=HISTORY_POINTS))
                series.append((now, value))

    def _coalesced_between(self, cell: str, start: float, end: float) -> int | None:
        """Coalesced requests in `cell` between two times (None: nothing read yet). Before
        the first reading the cell's count since it started is the baseline (0)."""
        series = self._coalesced.get(cell)
        if not series:
            return None
        first = [v for t, v in series if t <= start]
        last = [v for t, v in series if t <= end] or [series[0][1]]
        return max(0, int(last[-1] - (first[-1] if first else 0.0)))

    def _ingest(
        self, events: Iterable[dict[str, Any]], samples: list[dict[str, Any]], now: float
    ) -> None:
        """Add new events to the timeline (bursts merged), newest last."""
        for event in events:
            key = (
                event.get("cell"),
                event.get("defense"),
                event.get("kind"),
                event.get("at"),
                event.get("reason"),
            )
            if key in self._seen:
                continue
            self._seen.add(key)
            self._seen_order.append(key)
            if len(self._seen_order) > 20_000:
                self._seen.discard(self._seen_order.popleft())
            at = _f(event.get("at"))
            self._last_event_at = max(self._last_event_at, at)
            described = describe_event(event)
            if described is None:
                continue
            category, text = described
            cell = event.get("cell")
            defense = str(event.get("defense"))
            if defense == "cellular_routing":
                # "isolated cell 4: 0.3% impact": the share of every user's requests that
                # failed, beside that cell's own, over the window - only for a fresh event.
                target = str((event.get("detail") or {}).get("cell", cell))
                if now - at <= WINDOW_SECONDS:
                    _, overall = _percent_failed(samples)
                    _, own = _percent_failed(samples, cell=target)
                    text = (
                        f"Isolated cell {target}: {overall:.1f}% impact on all users "
                        f"(vs {own:.0f}% in cell {target}); no failover"
                    )
            merged = self._merge(cell, defense, at, text, category)
            if merged is None:
                self.incidents.append(
                    {
                        "at": at,
                        "last_at": at,
                        "cell": cell,
                        "defense": defense,
                        "category": category,
                        "text": text,
                        "count": 1,
                    }
                )
        for incident in self.incidents:
            if incident["defense"] != "request_coalescing" or incident["cell"] == "gateway":
                continue
            # A burst's saving: what its cell coalesced from just before its first event to
            # a burst's length after its last (the cell notes coalescing once per 5 s).
            end = incident["last_at"] + BURST_SECONDS
            if now - end <= 2 * FRAME_SECONDS or "saved" not in incident:
                saved = self._coalesced_between(
                    str(incident["cell"]), incident["at"] - FRAME_SECONDS, end
                )
                if saved is not None:
                    incident["saved"] = saved
                    incident["text"] = (
                        f"Prevented a stampede, saved {saved} computations "
                        "(concurrent misses shared one)"
                    )

    def _merge(
        self, cell: Any, defense: str, at: float, text: str, category: str
    ) -> dict[str, Any] | None:
        for incident in reversed(self.incidents):
            if incident["cell"] == cell and incident["defense"] == defense:
                if at - incident["last_at"] <= BURST_SECONDS:
                    incident["count"] += 1
                    incident["last_at"] = max(incident["last_at"], at)
                    incident["text"] = text
                    incident["category"] = category
                    return dict(incident)
                return None
        return None


def _cell_body(entry: dict[str, Any]) -> dict[str, Any] | None:
    body = entry.get("state")
    if not isinstance(body, dict) or "error" in body:
        return None
    return body


def _breaker_row(
    boundary: str, name: str, snap: dict[str, Any], trips: int | None
) -> dict[str, Any]:
    return {
        "boundary": boundary,
        "name": name,
        "enabled": bool(snap.get("enabled", True)),
        "state": str(snap.get("state", "closed")),
        "failure_rate": round(_f(snap.get("failure_rate")), 4),
        "emergence_risk": round(_f(snap.get("emergence_risk")), 4),
        "open_remaining": round(_f(snap.get("open_remaining")), 1),
        "reason": str(snap.get("reason", "")),
        "trips": trips,
        "transitions": int(_f(snap.get("transitions"))),
    }


def _level_priorities(level: str) -> list[str]:
    for lvl in SHED_LEVELS:
        if lvl.name == level:
            return [p for p in PRIORITY_ORDER if p in lvl.priorities]
    if level == "override":  # the control loop's phase-transition override sheds like red
        return [p for p in PRIORITY_ORDER if p in RED.priorities]
    return []


def _recovery_stage(phase: str, actions: list[str]) -> str:
    """The seed's recovery sequence: paused -> warming/draining -> ramp -> idle."""
    if phase == "paused":
        if "warm_caches" in actions:
            return "warming"
        if "drain_queues" in actions:
            return "draining"
        return "paused"
    if phase == "restoring":
        return "ramp"
    return phase  # idle, manual


def _page() -> str:
    return resources.files("chaosemergence.app").joinpath("dashboard.html").read_text("utf-8")


def dashboard_routes(token: str) -> list[Route]:
    """`/dashboard` (the page) and `/admin/dashboard` (its data, behind the admin token)."""
    dashboard = Dashboard(token)
    page = _page()

    async def page_endpoint(_: Request) -> Response:
        return HTMLResponse(
            page,
            headers={
                "Cache-Control": "no-store",
                # Nothing but this gateway: no CDN, no external script, style or font.
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
            },
        )

    async def data_endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await dashboard.frame(request.app))
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            logger.exception("dashboard frame failed")
            return JSONResponse(
                {"error": f"dashboard frame failed: {type(error).__name__}: {error}"},
                status_code=503,
            )

    return [
        Route("/dashboard", page_endpoint, methods=["GET"]),
        Route("/admin/dashboard", data_endpoint, methods=["GET"]),
    ]
