"""The gateway's client for its hot path: one user request forwarded to one cell.

Built on aiohttp's client (docs/decisions.md, "The gateway forwards with aiohttp"): its
connection pool hands a kept-alive connection over in constant time, where httpx/httpcore
walked every pooled connection (a `poll` on each socket) for each request and looked up
the async library by a failing import each time, so the gateway got slower as concurrency
grew. What the gateway needs from a client is small, so it is all here: a status, a body,
the Retry-After header, and three kinds of failure.

- `CellUnreachable`: the request never reached a cell process (connection refused, or a
  kept-alive connection the cell closed while draining for a restart): safe to send again.
- `CellTimeout`: no answer within the cell timeout (the connect timeout for a new
  connection; the cell timeout to wait for a pooled one and for the answer).
- `CellTransportError`: any other transport failure (reset, malformed answer).

All three are `CellError`, and each carries a short `kind` the gateway puts in its 503.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from chaosemergence.contract import CALLER_TIMEOUT_HEADER

__all__ = [
    "CellAnswer",
    "CellClient",
    "CellError",
    "CellTimeout",
    "CellTransportError",
    "CellUnreachable",
]

# Seconds to open a new connection to a cell (on loopback, a live cell accepts at once).
CONNECT_TIMEOUT = 1.0
# At most this many connections to all cells together (the gateway's own backstop).
CONNECTION_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class CellAnswer:
    """A cell's answer: what the gateway passes on to the user."""

    status: int
    content: bytes
    retry_after: str | None


class CellError(Exception):
    """The cell did not answer; ``kind`` names how (it goes into the gateway's 503)."""

    kind = "error"

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"{url}: {self.kind}: {detail}")
        self.url = url


class CellUnreachable(CellError):
    """The request never reached a cell process: sending it again is safe."""

    kind = "unreachable"


class CellTimeout(CellError):
    """No answer (or no connection) within the timeout."""

    kind = "timeout"


class CellTransportError(CellError):
    """The connection failed some other way (reset, malformed answer)."""

    kind = "transport"


class CellClient:
    """Sends user requests to cells over pooled keep-alive connections (event loop only).

    The session is created on first use, inside the running loop (aiohttp binds it to
    that loop), and closed by `aclose`.
    """

    def __init__(
        self,
        timeout: float,
        *,
        connect_timeout: float = CONNECT_TIMEOUT,
        limit: int = CONNECTION_LIMIT,
    ) -> None:
        if not timeout > 0 or not connect_timeout > 0:
            raise ValueError(f"timeouts must be positive, got {timeout}, {connect_timeout}")
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            # Waiting for a pooled connection (or opening one) and then for the answer.
            connect=timeout,
            sock_connect=connect_timeout,
            sock_read=timeout,
        )
        self._limit = limit
        self._caller_timeout_ms = f"{timeout * 1000:.0f}"
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, limit_per_host=0),
                timeout=self._timeout,
                # A proxy hop: no cookies, no compression, no environment proxies.
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
            # aiohttp resends an idempotent request once, silently, when a kept-alive
            # connection drops; the gateway resends itself (counted in
            # emergence_gateway_reconnects_total, for payments too), so turn aiohttp's off.
            # No public switch exists; tests/app/test_cell_client.py pins the behaviour.
            session._retry_connection = False
        return session

    async def send(
        self, method: str, url: str, body: bytes = b"", content_type: str | None = None
    ) -> CellAnswer:
        """One request; raises a `CellError` subclass when the cell did not answer."""
        # The cell drops the request instead of serving it once this timeout has passed.
        headers = {CALLER_TIMEOUT_HEADER: self._caller_timeout_ms}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self._open().request(
                method, url, data=body or None, headers=headers, allow_redirects=False
            ) as response:
                content = await response.read()
                return CellAnswer(response.status, content, response.headers.get("Retry-After"))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectorError) as error:
            # A refused connection, or a kept-alive one closed before any answer.
            raise CellUnreachable(url, str(error) or type(error).__name__) from error
        except TimeoutError as error:  # aiohttp's own timeouts subclass it
            raise CellTimeout(url, str(error) or type(error).__name__) from error
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as error:
            raise CellTransportError(url, str(error) or type(error).__name__) from error

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
