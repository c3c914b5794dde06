"""The gateway's and cells' HTTP protocol: a response's head and body leave in one write."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import uvicorn
import uvloop

from chaosemergence.app.http_protocol import CoalescingHttpToolsProtocol, CoalescingTransport
from chaosemergence.bench.hello import app
from tests.conftest import free_port


async def _pair() -> tuple[socket.socket, asyncio.Transport, list[bytes]]:
    """A real socket transport whose writes are recorded as they reach it."""
    reader, writer = socket.socketpair()
    reader.settimeout(5)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=writer)
    writes: list[bytes] = []
    real_write = transport.write

    def record(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    transport.write = record  # type: ignore[method-assign]
    return reader, transport, writes


async def test_writes_of_one_loop_iteration_go_out_as_one() -> None:
    reader, transport, writes = await _pair()
    coalescing = CoalescingTransport(transport, asyncio.get_running_loop())
    coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    coalescing.write(b"{}")
    assert writes == []  # held until the end of this iteration
    await asyncio.sleep(0)
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert reader.recv(4096).endswith(b"{}")
    coalescing.write(b"last")
    coalescing.close()  # sends what it holds first
    assert writes[-1] == b"last"
    assert reader.recv(4096) == b"last"
    reader.close()


def test_a_server_on_the_protocol_answers_whole_responses() -> None:
    """uvicorn on uvloop (as the gateway and the cells run), kept-alive requests answered."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=uvloop.run, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start within 10 s"
        with httpx.Client(timeout=5) as client:
            for _ in range(3):  # kept-alive: each response ends where the next begins
                answer = client.get(f"http://127.0.0.1:{port}/users/1/profile")
                assert answer.status_code == 200 and answer.json() == {"hello": "world"}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
