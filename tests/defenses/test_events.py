"""Tests for the defense event log."""

from __future__ import annotations

import pytest

from chaosemergence.defenses import DefenseEvent, EventLog

from .conftest import FakeClock


def test_record_stamps_event_with_clock(clock: FakeClock, events: EventLog) -> None:
    """A recorded event carries the defense, kind, reason, detail and the clock's time."""
    event = events.record("circuit_breaker", "activated", "5 failures", breaker="db")
    assert event == events.all()[0]
    assert event.as_dict() == {
        "defense": "circuit_breaker",
        "kind": "activated",
        "at": clock.now,
        "reason": "5 failures",
        "detail": {"breaker": "db"},
    }


def test_since_returns_only_later_events(clock: FakeClock, events: EventLog) -> None:
    """since(t) keeps events at or after t and drops older ones."""
    events.record("a", "activated", "x")
    clock.advance(5)
    t = clock.now
    events.record("b", "deactivated", "y")
    assert [e.defense for e in events.since(t)] == ["b"]
    assert len(events.since(0)) == 2


def test_maxlen_bounds_the_log(clock: FakeClock) -> None:
    """The log keeps only the newest maxlen events."""
    log = EventLog(clock=clock, maxlen=3)
    for i in range(5):
        log.record(f"d{i}", "activated", "r")
    assert [e.defense for e in log.all()] == ["d2", "d3", "d4"]


def test_listeners_see_every_event(events: EventLog) -> None:
    """Subscribed listeners are called with each new event until unsubscribed."""
    seen: list[DefenseEvent] = []
    events.subscribe(seen.append)
    events.record("a", "activated", "r")
    events.unsubscribe(seen.append)
    events.record("b", "activated", "r")
    assert [e.defense for e in seen] == ["a"]


def test_unknown_kind_is_rejected(events: EventLog) -> None:
    """Only 'activated' and 'deactivated' are valid kinds."""
    with pytest.raises(ValueError, match="kind"):
        events.record("a", "opened", "r")  # type: ignore[arg-type]


def test_events_are_frozen(events: EventLog) -> None:
    """A recorded event cannot be changed afterwards."""
    event = events.record("a", "activated", "r")
    with pytest.raises(AttributeError):
        event.reason = "other"  # type: ignore[misc]


def test_snapshot_and_clear(events: EventLog) -> None:
    """snapshot() reports recent events and clear() empties the log."""
    events.record("a", "activated", "r")
    snap = events.snapshot()
    assert snap["retained"] == 1
    events.clear()
    assert len(events) == 0
