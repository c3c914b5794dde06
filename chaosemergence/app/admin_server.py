"""The admin API's own listener, thread and event loop, inside the gateway process.

The data plane (users' requests) runs on the main thread's event loop; at the collapse an
experiment provokes, that loop has thousands of requests in flight and answers anything
else (a probe, a rollback) only after them. The admin API gets a listener of its own,
served by uvicorn on a thread of its own with its own event loop, so it answers within a
second at any load (docs/trust.md). Its address is written next to the admin token
(``admin-url-<port>``), where the extension's client finds it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

__all__ = ["AdminServer", "remove_admin_url_file", "write_admin_url_file"]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class AdminServer:
    """Serves ``app`` on ``host:port`` (0: an ephemeral port) from a thread of its own."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self._sock.listen(256)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="admin-api", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            # Not the main thread: uvicorn installs no signal handlers here.
            self._server.run(sockets=[self._sock])
        except BaseException as error:  # reported by start()
            self.error = error

    def start(self) -> None:
        """Start serving; RuntimeError when the listener did not come up in time."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the admin API did not start on {self.url}: {self.error!r}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving (graceful, then forced) and close the listener."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(STOP_TIMEOUT)
        self._sock.close()


def write_admin_url_file(path: Path, url: str) -> None:
    """Publish the admin listener's URL (0600, next to the token file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(url)


def remove_admin_url_file(path: Path) -> None:
    path.unlink(missing_ok=True)
