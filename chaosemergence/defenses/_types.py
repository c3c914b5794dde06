"""Shared type aliases for the defense library."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["Clock", "Sleep", "T"]

T = TypeVar("T")

#: A source of time in seconds; ``time.monotonic`` in production, a fake in tests.
Clock = Callable[[], float]

#: An awaitable sleep; ``asyncio.sleep`` in production, a recorder in tests.
Sleep = Callable[[float], Awaitable[object]]
