"""Real processes for the observability tests: `chaosemergence serve` with extra flags,
Alertmanager (Debian's prometheus-alertmanager) and a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil

from chaosemergence.observe.alertmanager import alertmanager_yaml
from tests.conftest import RunningSystem, start_system
from tests.observe.promtool import tool


def serve(state_dir: Path, port: int, cells: int, *extra: str) -> RunningSystem:
    """`chaosemergence serve` with `extra` flags; returns once /health answers."""
    return start_system(state_dir, cells=cells, port=port, flags=extra)


def children_named(pid: int, name: str) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children() if p.name() == name]


def port_open(port: int) -> bool:
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        for c in psutil.net_connections("tcp")
    )


def wait_until[T](read: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = read()
            if done(value):
                return value
        except (httpx.HTTPError, KeyError, ValueError, IndexError):
            value = None  # type: ignore[assignment]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last value {value!r}")
        time.sleep(0.25)


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every Alertmanager notification it receives."""

    def __init__(self, port: int) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with received._lock:
                    received.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification so far (status, labels, annotations, ...)."""
        with self._lock:
            return [alert for n in self.notifications for alert in n["alerts"]]

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)


class Alertmanager:
    """Debian's prometheus-alertmanager on 127.0.0.1, routing everything to `webhook_url`."""

    def __init__(self, folder: Path, port: int, webhook_url: str) -> None:
        binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "alertmanager.yml"
        config.write_text(
            alertmanager_yaml(
                webhook_url, group_wait="0s", group_interval="1s", repeat_interval="1h"
            )
        )
        self.address = f"127.0.0.1:{port}"
        self.log = folder / "alertmanager.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.path={folder / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--cluster.listen-address=",  # no gossip port on every interface
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"http://{self.address}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("alertmanager not ready")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
