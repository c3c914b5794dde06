"""A bare ASGI hello-world: the server stack's own ceiling (uvicorn, uvloop, httptools).

Run by the service benchmark as ``uvicorn chaosemergence.bench.hello:app`` with the same
options the gateway and the cells use, so "through the gateway" has an anchor that costs
nothing but the stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["app"]

_BODY = b'{"hello":"world"}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"17")],
}


async def app(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(_START)
    await send({"type": "http.response.body", "body": _BODY})
