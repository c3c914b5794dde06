"""The `chaosemergence` command: `serve` runs the reference system in the foreground."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from chaosemergence.extras import MissingExtraError, require

    try:
        require("reference", "chaosemergence serve (the reference system)")
    except MissingExtraError as error:
        print(f"chaosemergence serve: {error}", file=sys.stderr)
        return 2
    import uvicorn

    from chaosemergence.app.admin_server import (
        AdminServer,
        remove_admin_url_file,
        write_admin_url_file,
    )
    from chaosemergence.app.auth import TOKEN_ENV, load_or_create_token
    from chaosemergence.app.gateway import create_gateway
    from chaosemergence.app.http_protocol import CoalescingHttpToolsProtocol
    from chaosemergence.app.overrides import apply_overrides, load_overrides
    from chaosemergence.app.settings import (
        SystemSettings,
        admin_url_file_for_port,
        default_state_dir,
        is_loopback,
        remove_if_owned,
        token_file_for_port,
    )
    from chaosemergence.app.supervisor import Supervisor

    cell_urls = tuple(args.cell_url or ())
    if cell_urls and not os.environ.get(TOKEN_ENV):
        print(
            f"chaosemergence serve: --cell-url needs {TOKEN_ENV}: the cells started elsewhere "
            "(`chaosemergence cell`) must hold the same admin token as the gateway",
            file=sys.stderr,
        )
        return 2
    try:
        settings = SystemSettings(
            cells=len(cell_urls) or args.cells,
            port=args.port,
            host=args.host,
            state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
            seed=args.seed,
            cell_urls=cell_urls,
        )
        if args.config:
            settings = apply_overrides(settings, load_overrides(Path(args.config)))
    except (ValueError, OSError) as error:
        print(f"chaosemergence serve: {error}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host) and not os.environ.get(TOKEN_ENV):
        print(
            f"chaosemergence serve: refusing to bind {settings.host}, which is not a loopback "
            f"address, with a generated admin token: set {TOKEN_ENV} to a token of your own "
            "(anyone who can reach the port must not be able to guess it)",
            file=sys.stderr,
        )
        return 2
    token_file = token_file_for_port(settings.port, settings.state_dir)
    token = load_or_create_token(token_file)
    supervisor = Supervisor(settings, token, settings.state_dir / f"run-{settings.port}")
    prometheus = _start_prometheus(args, settings.host, settings.port, settings.state_dir)
    if prometheus is False:
        return 2
    admin: AdminServer | None = None
    admin_url_file = admin_url_file_for_port(settings.port, settings.state_dir)
    try:
        supervisor.start()
        gateway = create_gateway(supervisor, token)
        # The admin API: its own listener, thread and event loop (docs/trust.md).
        admin = AdminServer(gateway.admin_app, settings.host, args.admin_port)
        admin.start()
        gateway.admin_url.append(admin.url)
        write_admin_url_file(admin_url_file, admin.url)
        _leave_signals_to_uvicorn()
        print(
            f"chaosemergence: gateway on http://{settings.host}:{settings.port} with "
            f"{settings.cells} cells; admin token in {token_file}",
            flush=True,
        )
        print(
            f"chaosemergence: admin API on {admin.url} (also relayed by the gateway's port)",
            flush=True,
        )
        print(
            f"chaosemergence: live dashboard on {admin.url}/dashboard"
            " (it asks for the admin token; or `chaosemergence dashboard` in a terminal)",
            flush=True,
        )
        uvicorn.run(
            gateway.data_app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http=CoalescingHttpToolsProtocol,
            timeout_graceful_shutdown=5,
        )
    finally:
        # A clean shutdown leaves no token or admin-URL file behind (docs/trust.md).
        remove_admin_url_file(admin_url_file)
        remove_if_owned(token_file, token)
        if admin is not None:
            admin.stop()
        supervisor.stop()
        if prometheus is not None:
            prometheus.stop()
    return 0


def _cell(args: argparse.Namespace) -> int:
    """One cell for a gateway elsewhere: the settings it would get, then the cell's own main."""
    from chaosemergence.app import cell_main
    from chaosemergence.app.overrides import apply_overrides, load_overrides
    from chaosemergence.app.settings import CELL_URL, SystemSettings, default_state_dir
    from chaosemergence.contract import TOKEN_ENV

    if not os.environ.get(TOKEN_ENV):
        print(f"chaosemergence cell: set {TOKEN_ENV} to the gateway's admin token", file=sys.stderr)
        return 2
    if not CELL_URL.fullmatch(args.gateway_url):
        print(
            f"chaosemergence cell: --gateway-url must be http://HOST:PORT, got "
            f"{args.gateway_url!r}",
            file=sys.stderr,
        )
        return 2
    try:
        settings = SystemSettings(
            cells=args.cells,
            state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
            seed=args.seed,
        )
        if args.config:
            settings = apply_overrides(settings, load_overrides(Path(args.config)))
        if not 0 <= args.index < args.cells:
            raise ValueError(f"index must be in 0..{args.cells - 1}, got {args.index}")
    except (ValueError, OSError) as error:
        print(f"chaosemergence cell: {error}", file=sys.stderr)
        return 2
    run_dir = settings.state_dir / f"cell-{args.index}-{args.port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_file = run_dir / "settings.json"
    settings_file.write_text(json.dumps(settings.to_json()))
    print(
        f"chaosemergence: cell {args.index} of {args.cells} on http://{args.host}:{args.port} "
        f"for the gateway at {args.gateway_url}",
        flush=True,
    )
    cell_main.main(
        [
            f"--index={args.index}",
            f"--port={args.port}",
            f"--host={args.host}",
            f"--gateway-url={args.gateway_url}",
            f"--settings={settings_file}",
            f"--db={run_dir / f'cell-{args.index}.sqlite3'}",
        ]
    )
    return 0


def _start_prometheus(args: argparse.Namespace, host: str, port: int, state_dir: Path) -> Any:
    """`--prometheus`: a started LocalPrometheus; None without the flag; False on error."""
    if not args.prometheus:
        return None
    from chaosemergence.observe.local_prometheus import LocalPrometheus, PrometheusUnavailable

    try:
        prometheus = LocalPrometheus(
            f"http://{host}:{port}/targets",
            args.prometheus_port,
            state_dir / f"prometheus-{port}",
            alertmanagers=args.alertmanager,
        )
        prometheus.start()
    except (PrometheusUnavailable, OSError) as error:
        print(f"chaosemergence serve: {error}", file=sys.stderr)
        return False
    print(
        f"chaosemergence: prometheus on {prometheus.url} (alert rules loaded"
        + (f", alerts to {', '.join(args.alertmanager)})" if args.alertmanager else ")"),
        flush=True,
    )
    return prometheus


def _leave_signals_to_uvicorn() -> None:
    # uvicorn handles SIGINT/SIGTERM (graceful shutdown), then re-raises the signal to the
    # handler that was there before; a no-op there lets `finally` stop the cells cleanly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosemergence", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the reference system (gateway + cells)")
    serve.add_argument(
        "--cells", type=int, default=10, help="number of cell processes (default 10)"
    )
    serve.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; any other needs $CHAOSEMERGENCE_ADMIN_TOKEN)",
    )
    serve.add_argument(
        "--admin-port",
        type=int,
        default=0,
        help="port of the admin API's own listener (default: any free port, written to "
        "<state dir>/admin-url-<port>)",
    )
    serve.add_argument(
        "--cell-url",
        action="append",
        default=None,
        metavar="http://HOST:PORT",
        help="a cell started elsewhere with `chaosemergence cell` (repeatable, in index order; "
        "replaces --cells: the gateway starts no cell itself; docs/scaling.md)",
    )
    serve.add_argument("--state-dir", default=None, help="tokens, databases, logs")
    serve.add_argument("--seed", type=int, default=7, help="seed of every random generator")
    serve.add_argument(
        "--config",
        default=None,
        help="YAML/JSON file of settings overrides, e.g. "
        "'dependencies: {recommendations: {concurrency: 2}}' (see docs/architecture.md)",
    )
    serve.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a local Prometheus on 127.0.0.1 scraping the system, with the alert "
        "rules (needs the `prometheus` binary; docs/observability.md)",
    )
    serve.add_argument("--prometheus-port", type=int, default=9090, help="its port (default 9090)")
    serve.add_argument(
        "--alertmanager",
        action="append",
        default=None,
        metavar="HOST:PORT",
        help="with --prometheus: send alerts to this Alertmanager (repeatable)",
    )
    cell = commands.add_parser(
        "cell",
        help="run one cell on its own, for a gateway started with --cell-url (docs/scaling.md)",
    )
    cell.add_argument("--index", type=int, required=True, help="its place in the gateway's list")
    cell.add_argument("--cells", type=int, required=True, help="how many cells the system has")
    cell.add_argument("--port", type=int, required=True, help="port to listen on")
    cell.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    cell.add_argument(
        "--gateway-url", required=True, help="the gateway (its shared dependency), http://HOST:PORT"
    )
    cell.add_argument("--state-dir", default=None, help="its database, events and settings")
    cell.add_argument("--seed", type=int, default=7, help="seed of every random generator")
    cell.add_argument("--config", default=None, help="the gateway's settings overrides file")
    report = commands.add_parser(
        "report", help="one self-contained HTML report of journals (docs/report.md)"
    )
    report.add_argument("journals", nargs="+", help="journal.json files of the same experiment")
    report.add_argument(
        "-o", "--output", default=None, help="HTML file (default: the first journal's, .html)"
    )
    report.add_argument(
        "--chart",
        default=None,
        help="write only this chart, as an SVG file: p99_ms, error_rate_pct, "
        "failure_radius_pct or retry_amplification",
    )
    dashboard = commands.add_parser(
        "dashboard", help="the defense-effectiveness view, live in the terminal (docs/dashboard.md)"
    )
    dashboard.add_argument(
        "--url", default=None, help="gateway URL (default $CHAOSEMERGENCE_URL or :8080)"
    )
    dashboard.add_argument("--state-dir", default=None, help="where the admin token file is")
    dashboard.add_argument("--once", action="store_true", help="print one frame and exit")
    dashboard.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "cell":
        return _cell(args)
    if args.command == "dashboard":
        from chaosemergence.extras import MissingExtraError, require

        try:
            require("reference", "chaosemergence dashboard")
        except MissingExtraError as error:
            print(f"chaosemergence dashboard: {error}", file=sys.stderr)
            return 2
        from chaosemergence.terminal_dashboard import dashboard_command

        return dashboard_command(args.url, args.state_dir, args.once, args.interval)
    if args.command == "report":
        from chaosemergence.report_html import report_command

        return report_command(args.journals, args.output, args.chart)
    return 2


if __name__ == "__main__":
    sys.exit(main())
