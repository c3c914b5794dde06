"""uvicorn's httptools protocol with a response's writes coalesced into one send.

uvicorn writes a response's status line and headers on ``http.response.start`` and its
body on ``http.response.body``: two ``transport.write`` calls, which uvloop turns into two
``send`` system calls (and the peer usually into two receives). On the gateway's hot path,
where a forwarded request's cost is mostly system calls (docs/decisions.md, "Performance"),
that is a measurable share. ``CoalescingHttpToolsProtocol`` gives each connection a
transport that holds the writes of one event-loop iteration and sends them together at its
end (``loop.call_soon``): the head and the body a handler sends back to back leave in one
``send``. Nothing waits longer than the current iteration; ``close`` sends what is held
first. Used as ``uvicorn.Config(http=CoalescingHttpToolsProtocol)`` by the gateway and the
cells.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol", "CoalescingTransport"]


class CoalescingTransport:
    """A transport whose writes within one loop iteration go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []  # guarded by the event loop (callbacks only)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def flush(self) -> None:
        if self._held:
            data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol over a CoalescingTransport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but writes like one.
        coalescing = CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, coalescing))
