"""The death-spiral model: ballast, the limit, GC pauses and the three guardrails (fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from chaosemergence.app.memory import MB, MemoryModel
from chaosemergence.app.settings import SystemSettings
from chaosemergence.contract import check_pressure
from chaosemergence.defenses import EventLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _model(
    clock: Clock, **settings: float
) -> tuple[MemoryModel, list[str], list[str], EventLog, list[float]]:
    deaths: list[str] = []
    restarts: list[str] = []
    slept: list[float] = []
    events = EventLog(clock=clock)

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    model = MemoryModel(
        SystemSettings(**settings),  # type: ignore[arg-type]
        on_oom=deaths.append,
        on_restart=restarts.append,
        clock=clock,
        events=events,
        sleep=sleep,
    )
    return model, deaths, restarts, events, slept


def _run(model: MemoryModel, clock: Clock, seconds: float, step: float = 0.1) -> None:
    for _ in range(round(seconds / step)):
        clock.now += step
        model.tick()


def test_ballast_grows_at_the_requested_rate() -> None:
    """32 MB/s for 2 s allocates 64 MB of real ballast and no more once the leak ends."""
    clock = Clock()
    model, *_ = _model(clock)
    model.start_pressure(32, 2)
    _run(model, clock, 3.0)
    assert model.ballast_bytes == pytest.approx(64 * MB, rel=0.01)
    assert model.pressure is None


def test_the_cell_dies_at_its_limit_and_never_allocates_past_it() -> None:
    """With every defense off, the leak reaches the limit: on_oom once, ballast == limit."""
    clock = Clock()
    model, deaths, restarts, events, _ = _model(clock, cell_memory_limit_mb=64)
    for defense in (model.guardrail, model.gc_breaker, model.predictive):
        defense.enabled = False
    model.start_pressure(100, 60)
    _run(model, clock, 2.0)
    assert len(deaths) == 1 and "64 MB" in deaths[0]
    assert model.ballast_bytes == 64 * MB
    assert restarts == [] and len(events) == 0


def test_guardrail_sheds_then_predictive_restart_asks_before_the_limit() -> None:
    """At 32 MB/s the guardrail sheds non-critical work first, then a restart is requested."""
    clock = Clock()
    model, deaths, restarts, events, _ = _model(clock)
    model.start_pressure(32, 60)
    shed_at = restart_at = None
    for step in range(1, 61):
        clock.now += 0.1
        model.tick()
        if shed_at is None and model.admit(critical=False) is not None:
            shed_at = step / 10
            assert model.admit(critical=True) is None  # payments still get in
        if restarts:
            restart_at = step / 10
            break
    assert shed_at is not None and restart_at is not None and shed_at < restart_at
    assert 0.5 < model.usage < 0.95  # asked in time, with room to drain
    assert deaths == [] and len(restarts) == 1
    names = [(e.defense, e.kind) for e in events.all()]
    assert ("memory_guardrail", "activated") in names
    assert ("predictive_restart", "activated") in names


def test_gc_pauses_grow_with_usage_and_are_serialized() -> None:
    """No pause without ballast; near the limit every request pays most of gc_pause_max_ms."""
    clock = Clock()
    model, _, _, _, slept = _model(clock, cell_memory_limit_mb=32)
    assert model.pause_seconds() == 0.0
    asyncio.run(model.gc_pause())
    assert slept == []
    model.start_pressure(29, 60)
    _run(model, clock, 1.0)
    assert 0.1 < model.pause_seconds() <= 0.2
    asyncio.run(model.gc_pause())
    assert slept == [pytest.approx(model.pause_seconds())]
    assert model.gc_seconds == pytest.approx(slept[0])


def test_a_request_waits_out_every_pause_that_ran_while_it_worked() -> None:
    """Stop-the-world: a request pays its own pause, then the pauses others paid meanwhile."""
    clock = Clock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    model = MemoryModel(
        SystemSettings(cell_memory_limit_mb=32),
        on_oom=lambda _: None,
        on_restart=lambda _: None,
        clock=clock,
        sleep=sleep,
    )
    model.start_pressure(29, 60)
    _run(model, clock, 1.0)
    pause = model.pause_seconds()
    assert pause > 0.1

    async def work() -> str:
        assert model.gc_clock() == pytest.approx(pause)  # its own pause is behind it
        await model.gc_pause()  # another request's pause while this one works
        return "done"

    assert asyncio.run(model.run_request(work)) == "done"
    # its own pause, the other one's, then the time the world stood still while it worked
    assert slept == [pytest.approx(pause)] * 3
    assert model.gc_clock() == pytest.approx(2 * pause) and model.pauses == 2


def test_without_memory_pressure_a_request_is_not_delayed() -> None:
    """No ballast, no pause: run_request is just the work."""
    clock = Clock()
    model, _, _, _, slept = _model(clock)

    async def work() -> int:
        return 7

    assert asyncio.run(model.run_request(work)) == 7
    assert slept == [] and model.gc_clock() == 0.0


def test_requests_in_flight_hold_memory() -> None:
    """Each request in flight counts its working set against the limit."""
    clock = Clock()
    model, *_ = _model(clock, request_working_set_kb=1024)
    for _ in range(10):
        model.enter()
    assert model.used_bytes() == 10 * MB
    model.leave()
    assert model.used_bytes() == 9 * MB


def test_clear_releases_the_ballast_and_resets_the_guardrails() -> None:
    """clear() stops the leak, drops the ballast and closes the guardrails."""
    clock = Clock()
    model, _, _, events, _ = _model(clock, cell_memory_limit_mb=64)
    model.predictive.enabled = False
    model.start_pressure(16, 60)
    _run(model, clock, 2.5)
    assert model.admit(critical=False) == "memory_guardrail"
    released = model.clear()
    assert released == pytest.approx(40 * MB, rel=0.01)
    assert model.ballast_bytes == 0 and model.pressure is None
    assert model.admit(critical=False) is None
    assert events.all()[-1].kind == "deactivated"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"megabytes_per_second": 0, "duration": 10}, "megabytes_per_second"),
        ({"megabytes_per_second": "10", "duration": 10}, "megabytes_per_second"),
        ({"megabytes_per_second": True, "duration": 10}, "megabytes_per_second"),
        ({"megabytes_per_second": 2048, "duration": 10}, "megabytes_per_second"),
        ({"megabytes_per_second": 10}, "duration"),
        ({"megabytes_per_second": 10, "duration": -1}, "duration"),
    ],
)
def test_bad_pressure_requests_name_the_field(body: dict[str, object], field: str) -> None:
    """Every bad number is refused with a message that names its field."""
    with pytest.raises(ValueError, match=field):
        check_pressure(body)
