"""Bearer-token protection for every /admin and /internal path (plain ASGI middleware)."""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

# Types only: the extension imports TOKEN_ENV from here without the [reference] extra.
if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AdminAuthMiddleware", "load_or_create_token"]

TOKEN_ENV = "CHAOSEMERGENCE_ADMIN_TOKEN"
# The admin API, and the routes only the system's own processes call.
PROTECTED_PREFIXES = ("/admin", "/internal")


def load_or_create_token(token_file: Path) -> str:
    """The admin token: $CHAOSEMERGENCE_ADMIN_TOKEN, else a new one written to a 0600 file."""
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    token_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    os.chmod(token_file, 0o600)
    return token


class AdminAuthMiddleware:
    """Answers 401 to any /admin or /internal request without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = json.dumps({"error": "missing or wrong admin token"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
