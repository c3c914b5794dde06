"""The gateway's hot-path client against real sockets: answers, reuse, and each failure kind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from chaosemergence.app.cell_client import (
    CellClient,
    CellTimeout,
    CellTransportError,
    CellUnreachable,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A raw HTTP/1.1 server on loopback that counts connections and records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request


@contextlib.asynccontextmanager
async def serving(handler: Callable[[Server], Handler]) -> AsyncIterator[Server]:
    server = Server(lambda r, w: asyncio.sleep(0))
    server.handler = handler(server)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        await listener.wait_closed()


def answering(status: int, body: bytes, extra: bytes = b"") -> Callable[[Server], Handler]:
    """Answer every request on a connection, keeping it alive."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s"
                    % (status, len(body), extra, body)
                )
                await writer.drain()

        return handler

    return make


async def test_answer_carries_status_body_and_retry_after() -> None:
    """Status, body and Retry-After come back as the cell sent them."""
    async with serving(answering(429, b'{"shed": true}', b"Retry-After: 3\r\n")) as server:
        client = CellClient(5.0)
        try:
            answer = await client.send("GET", f"{server.url}/users/7/profile")
        finally:
            await client.aclose()
    assert (answer.status, answer.content, answer.retry_after) == (429, b'{"shed": true}', "3")
    assert server.requests[0].startswith(b"GET /users/7/profile HTTP/1.1\r\n")


async def test_post_body_and_content_type_are_forwarded() -> None:
    """A payment's JSON body and content type reach the cell unchanged."""
    async with serving(answering(200, b"{}")) as server:
        client = CellClient(5.0)
        try:
            await client.send(
                "POST", f"{server.url}/users/7/payments", b'{"amount_cents": 5}', "application/json"
            )
        finally:
            await client.aclose()
    request = server.requests[0]
    assert request.startswith(b"POST /users/7/payments HTTP/1.1\r\n")
    assert b"content-type: application/json" in request.lower()
    assert request.endswith(b'\r\n\r\n{"amount_cents": 5}')


async def test_every_request_tells_the_cell_how_long_the_gateway_waits() -> None:
    """The per-attempt timeout travels as X-Emergence-Timeout-Ms (the cell's deadline)."""
    async with serving(answering(200, b"{}")) as server:
        client = CellClient(0.6)
        try:
            await client.send("GET", f"{server.url}/users/7/profile")
        finally:
            await client.aclose()
    assert b"x-emergence-timeout-ms: 600\r\n" in server.requests[0].lower()


async def test_sequential_requests_reuse_one_connection() -> None:
    """Keep-alive: twenty requests in a row open one connection, not twenty."""
    async with serving(answering(200, b"ok")) as server:
        client = CellClient(5.0)
        try:
            for _ in range(20):
                assert (await client.send("GET", f"{server.url}/users/1/profile")).status == 200
        finally:
            await client.aclose()
    assert server.connections == 1
    assert len(server.requests) == 20


async def test_refused_connection_is_unreachable() -> None:
    """Nobody listening: the request never reached a cell, so it is safe to resend."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CellClient(5.0)
    try:
        with pytest.raises(CellUnreachable, match="unreachable"):
            await client.send("GET", f"http://127.0.0.1:{port}/users/1/profile")
    finally:
        await client.aclose()


async def test_connection_closed_without_an_answer_is_unreachable() -> None:
    """A draining cell closes the connection after reading the request: unreachable."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)

        return handler

    async with serving(make) as server:
        client = CellClient(5.0)
        try:
            with pytest.raises(CellUnreachable):
                await client.send("GET", f"{server.url}/users/1/profile")
        finally:
            await client.aclose()
    assert len(server.requests) == 1


async def test_no_answer_within_the_timeout_is_a_timeout() -> None:
    """A cell that holds the request past the timeout: CellTimeout, not a hang."""
    release = asyncio.Event()

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await release.wait()

        return handler

    async with serving(make) as server:
        client = CellClient(0.2)
        try:
            with pytest.raises(CellTimeout, match="timeout"):
                await client.send("GET", f"{server.url}/users/1/profile")
        finally:
            release.set()
            await client.aclose()


async def test_malformed_answer_is_a_transport_error() -> None:
    """Garbage instead of HTTP: a transport error (the breaker counts it), not a crash."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"this is not http\r\n\r\n")
            await writer.drain()

        return handler

    async with serving(make) as server:
        client = CellClient(5.0)
        try:
            with pytest.raises(CellTransportError):
                await client.send("GET", f"{server.url}/users/1/profile")
        finally:
            await client.aclose()


def test_timeouts_must_be_positive() -> None:
    """A zero timeout is refused at construction, naming the values."""
    with pytest.raises(ValueError, match="timeouts must be positive"):
        CellClient(0.0)
