"""Hands a change to what the data-plane loop owns over to that loop, without waiting on it.

The gateway's admin API runs on its own thread and event loop (app/admin_server.py); the
gateway's breakers and retry budget belong to the data plane's loop. A change the admin API
makes to them is handed to that loop (docs/trust.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DataPlaneHandoff"]


class DataPlaneHandoff:
    """Runs changes to what the data-plane loop owns on that loop, without waiting for it.

    ``run(fn)`` hands ``fn`` to the loop (``call_soon_threadsafe``): it runs before any
    request the loop handles after it, so it is as good as applied for the traffic, and the
    caller (the admin API's thread) never blocks on a loop that may be saturated. Before the
    loop runs, or after it stopped, there is no concurrent user and ``fn`` runs at once.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handed_off = 0  # changes run on the loop (read by tests)

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop

    def run(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(fn)
                self.handed_off += 1
                return
            except RuntimeError:  # closed meanwhile: no one else touches the objects now
                pass
        fn()
