"""Fixtures for the traffic tests: a tiny real HTTP target and a guard against leftover Locusts."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest

ROUTES = ("profile", "payments", "recommendations")


@dataclass(frozen=True)
class Hit:
    """One request the target received."""

    at: float
    method: str
    route: str
    user_id: int
    load: str | None
    body: dict[str, object] | None


@dataclass
class TargetServer:
    """A stdlib HTTP server on 127.0.0.1 that serves the gateway's three routes and logs hits.

    ``status`` maps a route to the status it answers with (default 200); ``delay`` maps a
    route to seconds to sleep before answering.
    """

    server: http.server.ThreadingHTTPServer
    hits: list[Hit] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[Hit]:
        with self.lock:
            return list(self.hits)

    def count(self) -> int:
        with self.lock:
            return len(self.hits)


def _handler(target: TargetServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as FastHttpUser expects

        def _serve(self) -> None:
            at = time.time()
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = self.path.split("/")
            ok = len(parts) == 4 and parts[1] == "users" and parts[3] in ROUTES
            ok = ok and parts[2].isdigit()
            if not ok:
                self._answer(404)
                return
            route = parts[3]
            body = json.loads(raw) if raw else None
            with target.lock:
                target.hits.append(
                    Hit(at, self.command, route, int(parts[2]),
                        self.headers.get("X-Emergence-Load"), body)
                )  # fmt: skip
            if route in target.delay:
                time.sleep(target.delay[route])
            self._answer(target.status.get(route, 200))

        def _answer(self, status: int) -> None:
            payload = b'{"ok": true}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a synchronized burst must not overflow the accept backlog


@pytest.fixture
def target() -> Iterator[TargetServer]:
    """A running target server; afterwards its port is closed."""
    server = _Server(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    target = TargetServer(server=server)
    server.RequestHandlerClass = _handler(target)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield target
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    assert not port_listening(target.port)


def port_listening(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def live_locusts() -> list[psutil.Process]:
    """Locust processes descended from this test process that are still running (not zombies)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and "locust" in child.cmdline():
                found.append(child)
    return found


@pytest.fixture(autouse=True)
def no_leftover_locusts() -> Iterator[None]:
    """Every traffic test must leave no Locust process behind."""
    assert not live_locusts(), "a previous test left Locust running"
    yield
    leftovers = live_locusts()
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not leftovers, f"Locust processes left behind: {[p.pid for p in leftovers]}"
