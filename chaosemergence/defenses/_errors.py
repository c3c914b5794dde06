"""Exceptions raised by the defenses when they refuse work."""

from __future__ import annotations

__all__ = ["CircuitOpenError", "DefenseError", "LoadShedError"]


class DefenseError(Exception):
    """Base class for work refused by a defense."""


class CircuitOpenError(DefenseError):
    """A circuit breaker rejected the call without running it."""

    def __init__(self, breaker: str, state: str, retry_after: float) -> None:
        self.breaker = breaker
        self.state = state
        self.retry_after = retry_after
        msg = f"circuit breaker {breaker!r} is {state}; retry after {retry_after:.1f}s"
        super().__init__(msg)


class LoadShedError(DefenseError):
    """A load shedder or guardrail refused the request to protect the system."""

    def __init__(self, defense: str, reason: str) -> None:
        self.defense = defense
        self.reason = reason
        super().__init__(f"{defense} shed the request: {reason}")
