"""A profile service written the way a user would, with the defenses and the admin API embedded.

Three routes: a user's profile (a cache in front of the database), their recommendations
(straight from the database; an optional feature) and payments (accepted into an outbox
that a periodic job flushes to the database). The database is simulated with a capacity:
``DB_CONCURRENCY`` calls at a time, ``DB_SERVICE_MS`` each.

What the library adds is marked ``# emergence``: a Guard (breaker -> retry with budget)
around every database call, single-flight and XFetch on the cache, jitter on the job, and
the admin API with ``/metrics`` (``EmergenceAdmin``), so that chaosemergence's actions and
probes drive and measure this service (examples/profile_service/experiment.yaml).

    ADMIN_TOKEN=$(openssl rand -hex 16) python examples/profile_service/app.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chaosemergence.defenses import (
    BreakerConfig,
    CircuitBreaker,
    Guard,
    Jitter,
    ProbabilisticExpiry,
    RetryBudget,
    RetryPolicy,
    SingleFlight,
)
from chaosemergence.embed import EmergenceAdmin

CACHE_TTL = float(os.environ.get("CACHE_TTL", "5"))
FLUSH_EVERY = 1.0


class Database:
    """The dependency: at most `concurrency` calls at a time, `service_ms` each."""

    def __init__(self, concurrency: int, service_ms: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._service = service_ms / 1000.0
        self.payments: list[dict[str, Any]] = []

    async def _work(self) -> None:
        async with self._slots:
            await asyncio.sleep(self._service)

    async def profile(self, user_id: int) -> dict[str, Any]:
        await self._work()
        return {"id": user_id, "name": f"user {user_id}"}

    async def recommendations(self, user_id: int) -> list[int]:
        await self._work()
        return [(user_id * 7 + i) % 1000 for i in range(5)]

    async def write_payments(self, batch: list[dict[str, Any]]) -> None:
        await self._work()
        self.payments.extend(batch)


db = Database(
    int(os.environ.get("DB_CONCURRENCY", "16")), float(os.environ.get("DB_SERVICE_MS", "5"))
)
cache: dict[int, tuple[dict[str, Any], float, float]] = {}  # id -> (value, expiry, cost)
outbox: list[dict[str, Any]] = []

# emergence: the admin API, the defenses around the database, the cache and the job.
admin = EmergenceAdmin(token=os.environ["ADMIN_TOKEN"])
guard = Guard(
    name="database",
    breaker=CircuitBreaker(
        "database",
        BreakerConfig(minimum_calls=10, window_seconds=10, open_durations=(3.0, 5.0, 10.0)),
        events=admin.events,
    ),
    retry=RetryPolicy(3, budget=RetryBudget(0.2, events=admin.events), name="database"),
)
database = admin.dependency("database", guard=guard)
coalesce = SingleFlight("profiles")
early = ProbabilisticExpiry(1.0)
admin.defense("request_coalescing", coalesce)
admin.defense("early_expiration", early)
admin.cache("profiles", invalidate=lambda: _clear(cache))
flush_jitter = Jitter("uniform", 0.5)
admin.timer("outbox-flush", jitter=flush_jitter)


def _clear(entries: dict[Any, Any]) -> int:
    removed = len(entries)
    entries.clear()
    return removed


async def load_profile(user_id: int) -> dict[str, Any]:
    started = time.monotonic()
    stale = cache.get(user_id)

    async def from_cache_or_default(_error: BaseException) -> dict[str, Any]:
        return {**stale[0], "stale": True} if stale else {"id": user_id, "degraded": True}

    value = await guard.run(
        lambda: database.attempt(db.profile, user_id), fallback=from_cache_or_default
    )
    if not value.get("degraded") and not value.get("stale"):
        admin.recorder.computation()
        cost = time.monotonic() - started
        cache[user_id] = (value, time.monotonic() + CACHE_TTL, cost)
    return value


async def profile(request: Request) -> JSONResponse:
    user_id = int(request.path_params["user_id"])
    entry = cache.get(user_id)
    if entry and not early.should_refresh(entry[1], entry[2]):
        admin.recorder.cache("hit")
        return JSONResponse(entry[0])
    admin.recorder.cache("miss")
    if coalesce.enabled:
        value = await coalesce.do(user_id, lambda: load_profile(user_id))
    else:
        value = await load_profile(user_id)
    return JSONResponse(value)


async def recommendations(request: Request) -> JSONResponse:
    user_id = int(request.path_params["user_id"])

    async def none(_error: BaseException) -> list[int]:
        return []  # an optional feature: an empty list rather than an error

    items = await guard.run(lambda: database.attempt(db.recommendations, user_id), fallback=none)
    return JSONResponse({"items": items})


async def payments(request: Request) -> JSONResponse:
    body = await request.json()
    outbox.append({"user": int(request.path_params["user_id"]), **body})
    return JSONResponse({"accepted": True}, status_code=202)


async def flush_outbox() -> None:
    """The periodic job: every second (jittered), write the outbox to the database."""
    while True:
        await asyncio.sleep(flush_jitter.apply(FLUSH_EVERY))
        batch = outbox[:]
        if not batch:
            continue
        with contextlib.suppress(Exception):  # kept for the next round
            await database.call(db.write_payments, batch)
            del outbox[: len(batch)]


def measured(route: str, handler: Any) -> Any:
    """Record what users see: the emergence_requests_total series the probes read."""

    async def endpoint(request: Request) -> JSONResponse:
        started = time.monotonic()
        try:
            response: JSONResponse = await handler(request)
        except Exception as error:
            response = JSONResponse({"error": type(error).__name__}, status_code=503)
        outcome = "success" if response.status_code < 500 else "failure"
        admin.recorder.request(route, outcome, time.monotonic() - started)
        return response

    return endpoint


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    async with admin.running():  # emergence: the metrics window and the lease
        job = asyncio.create_task(flush_outbox())
        yield
        job.cancel()


app = Starlette(
    routes=[
        Route("/users/{user_id:int}/profile", measured("profile", profile)),
        Route("/users/{user_id:int}/recommendations", measured("recommendations", recommendations)),
        Route("/users/{user_id:int}/payments", measured("payments", payments), methods=["POST"]),
        Route("/health", lambda _r: JSONResponse({"ok": True})),
        *admin.routes(),  # emergence: /admin/... and /metrics
    ],
    lifespan=lifespan,
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
