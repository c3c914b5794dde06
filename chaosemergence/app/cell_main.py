"""Entry point of one cell process (started by the supervisor, never by hand)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
from pathlib import Path

import uvicorn

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.cell_app import create_cell_app
from chaosemergence.app.cell_service import CellService
from chaosemergence.app.settings import SystemSettings

PARENT_CHECK_SECONDS = 1.0


async def _exit_when_orphaned(parent: int, server: uvicorn.Server) -> None:
    # A SIGKILLed supervisor cannot stop us: notice it and leave.
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    server.should_exit = True


async def _serve(args: argparse.Namespace) -> None:
    settings = SystemSettings.from_json(json.loads(Path(args.settings).read_text()))
    service = CellService(args.index, settings, Path(args.db))
    app = create_cell_app(service, os.environ[TOKEN_ENV])
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    watchdog = asyncio.create_task(_exit_when_orphaned(args.parent, server))
    try:
        await server.serve(sockets=[sock])
    finally:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # previous handler: make that a no-op so the process exits 0 after its cleanup.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvloop.run(_serve(args))


if __name__ == "__main__":
    main()
