"""Entry point of one cell process.

The supervisor starts it with ``--fd`` (a socket it keeps across restarts) and ``--parent``
(the cell exits when its gateway dies). ``chaosemergence cell`` starts one on its own, for a
gateway elsewhere (settings ``cell_urls``, docs/scaling.md): ``--host``/``--port`` to bind,
``--gateway-url`` where the gateway is, no parent to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.cell_app import create_cell_app
from chaosemergence.app.cell_service import CellService
from chaosemergence.app.http_protocol import CoalescingHttpToolsProtocol
from chaosemergence.app.lifecycle import RESTART_EXIT_CODE, events_file, exit_marker
from chaosemergence.app.settings import (
    SystemSettings,
    admin_url_file_for_port,
    local_address,
    remove_if_owned,
    token_file_for_port,
)
from chaosemergence.app.shared_client import SharedDependencyClient
from chaosemergence.defenses.metrics import PrometheusRecorder

PARENT_CHECK_SECONDS = 1.0

logger = logging.getLogger("chaosemergence.cell")


async def _exit_when_orphaned(
    parent: int, server: uvicorn.Server, settings: SystemSettings, token: str
) -> None:
    # A SIGKILLed supervisor cannot stop us: notice it and leave.
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    # It could not remove its token and admin-URL files either: do it for it, unless a new
    # system on the same port has written its own meanwhile (docs/trust.md).
    if remove_if_owned(token_file_for_port(settings.port, settings.state_dir), token):
        admin_url_file_for_port(settings.port, settings.state_dir).unlink(missing_ok=True)
    server.should_exit = True


def _gateway_url(settings: SystemSettings) -> str:
    address = local_address(settings.host)
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{settings.port}"


async def _serve(args: argparse.Namespace) -> int:
    settings = SystemSettings.from_json(json.loads(Path(args.settings).read_text()))
    token = os.environ[TOKEN_ENV]
    run_dir = Path(args.db).parent
    gateway = args.gateway_url or _gateway_url(settings)
    shared = SharedDependencyClient(gateway, token, args.index)
    servers: list[uvicorn.Server] = []

    def restart(_reason: str) -> None:
        # Stop accepting (the supervisor keeps the socket: new connections wait in its
        # backlog for the next process), finish what is in flight, then exit.
        for server in servers:
            server.should_exit = True

    def die(reason: str) -> None:
        with contextlib.suppress(OSError):
            exit_marker(run_dir, args.index).write_text(f"oom_killed: {reason}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    # One registry: the defenses' series, the cell's collector (create_cell_app) and the
    # embedding's /metrics and /admin/increase read it.
    recorder = PrometheusRecorder(CollectorRegistry(), cell=str(args.index))
    service = CellService(
        args.index,
        settings,
        Path(args.db),
        shared_call=shared.call,
        on_restart=restart,
        on_oom=die,
        events_file=events_file(run_dir, args.index),
        switches=json.loads(args.switches) if args.switches else None,
        jitter_removed=args.jitter_removed,
        recorder=recorder,
    )
    # Faults of this cell that outlived its previous process: what is left of them.
    if args.memory_pressure:
        leak = json.loads(args.memory_pressure)
        service.start_memory_pressure(leak["megabytes_per_second"], leak["duration"])
        logger.warning("cell %s: memory pressure re-injected: %s", args.index, leak)
    for fault_id, fault in (json.loads(args.faults) if args.faults else {}).items():
        service.inject_fault(fault, fault_id)
        logger.warning("cell %s: fault %s re-injected: %s", args.index, fault_id, fault)
    app = create_cell_app(service, token, recorder=recorder)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        sock.listen(1024)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    servers.append(server)
    watchdog = (
        asyncio.create_task(_exit_when_orphaned(args.parent, server, settings, token))
        if args.parent is not None
        else None
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await shared.aclose()
        if args.fd is None:
            sock.close()
    return RESTART_EXIT_CODE if service.restart_reason is not None else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--fd", type=int, help="a listening socket to serve (the supervisor's)")
    where.add_argument("--port", type=int, help="bind this port on --host instead")
    parser.add_argument("--host", default="127.0.0.1", help="with --port (default 127.0.0.1)")
    parser.add_argument("--gateway-url", default="", help="the gateway, when it is elsewhere")
    parser.add_argument("--settings", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    parser.add_argument("--switches", default="", help="JSON {defense: bool} to start with")
    parser.add_argument("--jitter-removed", action="store_true")
    parser.add_argument(
        "--memory-pressure", default="", help="JSON {megabytes_per_second, duration} left"
    )
    parser.add_argument("--faults", default="", help="JSON {fault id: fault request} left")
    args = parser.parse_args(argv)
    import uvloop

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
    # previous handler: make that a no-op so the process exits 0 after its cleanup.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    sys.exit(uvloop.run(_serve(args)))


if __name__ == "__main__":
    main()
