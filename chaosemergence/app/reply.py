"""What a cell's handler answers, before any web framework sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Reply"]


@dataclass(frozen=True)
class Reply:
    """What a handler answers: an HTTP-agnostic status and JSON body."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None
