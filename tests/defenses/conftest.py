"""Shared fixtures for the defense tests: a fake clock and an event log on it."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from chaosemergence.defenses import EventLog

R = TypeVar("R")


class FakeClock:
    """A clock that only moves when a test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_now[R](coro: Coroutine[Any, Any, R]) -> R:
    """Drive a coroutine that never suspends to completion, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    msg = "coroutine suspended; run_now only drives coroutines that never await a future"
    raise AssertionError(msg)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events(clock: FakeClock) -> EventLog:
    return EventLog(clock=clock)
