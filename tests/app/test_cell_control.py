"""The per-cell control loop: inputs, shedding, metastable recovery, jitter (fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaosemergence.app.cell_service import CellService
from chaosemergence.app.settings import SystemSettings


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _service(tmp_path: Path, clock: Clock, **settings: Any) -> CellService:
    return CellService(
        0, SystemSettings(**settings), tmp_path / "cell.sqlite3", clock=clock, wall_clock=clock
    )


@pytest.fixture
def service(tmp_path: Path, clock: Clock) -> Iterator[CellService]:
    svc = _service(tmp_path, clock)
    yield svc
    svc.store.close()


def _second(svc: CellService, clock: Clock, *, slow_ms: float = 0.0, requests: int = 0) -> None:
    """One second of traffic (`requests` served, each `slow_ms` long), then a control tick."""
    for i in range(requests):
        svc.ingress.meter.observe(f"u{i}", slow_ms / 1000, 200, 100, did_work=True)
    clock.now += 1.0
    svc.control.tick()


def _kinds(svc: CellService, defense: str) -> list[str]:
    return [e.kind for e in svc.events.all() if e.defense == defense]


def test_one_second_of_the_cell_becomes_loop_inputs(service: CellService, clock: Clock) -> None:
    """Rates, latencies of work, retries, demand and the pushed correlation are measured."""
    for i in range(20):
        service.ingress.meter.observe(f"u{i}", 0.010 * (i + 1), 200, 100, did_work=True)
    for _ in range(30):
        service.ingress.meter.observe("hot", 0.0001, 200, 100, did_work=False)  # cache hits
    service.clients.attempts["database"] += 12
    service.clients.first_attempts["database"] += 10
    service.clients.retries["database"] += 2
    service.control.set_correlation(0.4)
    clock.now += 1.0
    inputs = service.control.measure()
    assert inputs.request_rate == pytest.approx(50.0)
    assert inputs.p50_ms == pytest.approx(100.0) and inputs.p99_ms == pytest.approx(200.0)
    assert inputs.retry_rate == pytest.approx(2 / 12)
    # 10 first attempts/s on a database that serves 8 / 15 ms: demand 10 / 533.
    assert inputs.load == pytest.approx(max(50 / 200, 10 / (8 * 1000 / 15)))
    assert inputs.correlation == 0.4
    assert inputs.complexity is not None
    assert inputs.complexity.retry_amplification == pytest.approx(1.2)
    assert inputs.complexity.unique_users == 21
    clock.now += 10.0  # the gateway stopped pushing: the correlation goes stale
    assert service.control.measure().correlation == 0.0


async def test_complexity_over_budget_sheds_low_priority_with_429(
    tmp_path: Path, clock: Clock
) -> None:
    """Requests, users, data and retries over capacity: low priority is shed, payments never."""
    svc = _service(
        tmp_path,
        clock,
        cell_request_capacity=10.0,
        cell_user_capacity=10.0,
        cell_data_capacity_bytes=100.0,
    )
    try:
        svc.clients.attempts["recommendations"] += 90
        svc.clients.first_attempts["recommendations"] += 30
        svc.clients.retries["recommendations"] += 60
        _second(svc, clock, requests=40)
        assert svc.ingress.shedder.score >= 0.85 and svc.ingress.shedder.level.name == "emergency"
        assert "activated" in _kinds(svc, "load_shedding")
        # The cell's own users: the phase defenses also reinforce its boundary.
        users = [f"r{i}" for i in range(2000) if svc.ingress.boundary.home(f"r{i}") == 0][:40]
        answers = [await svc.recommendations(user) for user in users]
        shed = [a for a in answers if a.status == 429]
        assert len(shed) >= 15 and all(a.retry_after == 1 for a in shed)
        assert shed[0].body["shed_by"] == "load_shedding"
        assert all(svc.admission.check("payments") is None for _ in range(50))
        assert all(svc.admission.check("profile") is None for _ in range(50))  # core feature
        assert svc.admission.refused["load_shedding"] == len(shed)
    finally:
        await svc.stop()


async def test_metastable_signature_pauses_ingress_and_recovery_acts(
    service: CellService, clock: Clock
) -> None:
    """Low load with p99 > 500 ms for 5 s: ingress pauses, reset actions run, then it restores."""
    for _ in range(5):
        _second(service, clock, slow_ms=800, requests=5)
    recovery = service.control.recovery
    assert service.control.metastable.condition is not None
    assert recovery.phase.value == "paused"
    refusal = service.admission.check("profile")
    assert refusal is not None and refusal.status == 503
    assert refusal.defense == "metastable_recovery"
    assert service.admission.check("payments") is None  # critical work still gets in
    assert sum(service.control.actions.values()) >= 1
    for _ in range(60):  # healthy seconds: pause, then every step up to 100%
        _second(service, clock, slow_ms=20, requests=5)
        if recovery.phase.value == "idle":
            break
    assert recovery.phase.value == "idle"
    assert _kinds(service, "metastable_recovery") == ["activated", "deactivated"]
    assert service.admission.check("profile") is None


async def test_metastable_detector_off_never_pauses(service: CellService, clock: Clock) -> None:
    """Switched off, the same signature neither detects nor pauses anything."""
    service.set_defenses(False, ["metastable_detector"])
    for _ in range(8):
        _second(service, clock, slow_ms=800, requests=5)
    assert service.control.recovery.phase.value == "idle"
    assert _kinds(service, "metastable_detector") == []
    assert _kinds(service, "metastable_recovery") == []


async def test_a_tail_slow_by_design_is_not_a_metastable_state(
    tmp_path: Path, clock: Clock
) -> None:
    """With the signature's latency clause set above the healthy tail (a cold fill of 3
    round trips takes 1.2 s), seconds whose p99 is such a fill detect nothing, and ingress
    stays open; a slower tail still does."""
    svc = _service(tmp_path, clock, metastable_p99_ms=2500.0)
    try:
        for _ in range(8):
            _second(svc, clock, slow_ms=1200, requests=5)
        assert svc.control.metastable.condition is None
        assert svc.admission.check("profile") is None
        for _ in range(5):
            _second(svc, clock, slow_ms=3000, requests=5)
        assert svc.control.metastable.condition is not None
    finally:
        svc.store.close()


async def test_a_cell_with_saturated_workers_is_loaded_not_metastable(
    tmp_path: Path, clock: Clock
) -> None:
    """Few requests per second, but every worker busy and a line waiting: the load reads
    above 1 and a slow tail is overload, not a metastable state (ingress stays open)."""
    svc = _service(tmp_path, clock, cell_workers=2, cell_queue_limit=100)
    gate = asyncio.Event()

    async def held() -> None:
        async with svc.ingress.capacity.slot():
            await gate.wait()

    holders = [asyncio.create_task(held()) for _ in range(4)]
    try:
        while svc.ingress.capacity.busy + svc.ingress.capacity.waiting < 4:
            await asyncio.sleep(0)
        for _ in range(8):
            _second(svc, clock, slow_ms=900, requests=6)
            assert svc.control.last_inputs.load >= 1.0
        assert svc.control.metastable.condition is None
        assert svc.admission.check("profile") is None
        # The same seconds with the pool idle are the signature: slow at low load.
        gate.set()
        await asyncio.gather(*holders)
        for _ in range(5):
            _second(svc, clock, slow_ms=900, requests=6)
        assert svc.control.metastable.condition is not None
    finally:
        gate.set()
        svc.store.close()


def test_synchronization_restores_removed_jitter(service: CellService, clock: Clock) -> None:
    """Correlation above the danger threshold: maximum jitter, even after remove_all_jitter."""
    service.set_jitter(False)
    assert service.timers.naive()
    service.control.set_correlation(0.95)
    _second(service, clock)
    assert service.timers.jitter.maximum and not service.timers.removed
    assert not service.timers.naive()
    assert "activated" in _kinds(service, "jitter")
    assert service.timers.restored_by is not None


def test_with_the_jitter_defense_off_timers_stay_aligned(
    service: CellService, clock: Clock
) -> None:
    """Switched off, jitter does not come back: the timers stay naive (fixed intervals)."""
    service.set_defenses(False, ["jitter"])
    service.set_jitter(False)
    service.control.set_correlation(0.95)
    _second(service, clock)
    assert service.timers.naive() and service.timers.removed
    assert _kinds(service, "jitter") == []
    # Switched back on while synchronization is still detected: it responds at once.
    service.set_defenses(True, ["jitter"])
    assert service.timers.jitter.maximum and not service.timers.naive()


def test_defenses_off_keep_plain_jitter_until_it_is_removed(service: CellService) -> None:
    """Without the jitter defense, timers keep their plain jitter; removing it makes them naive."""
    service.set_defenses(False, None)
    assert (
        not service.timers.naive() and service.timers.timer_jitter() is service.timers.base_jitter
    )
    service.set_jitter(False)
    assert service.timers.naive()


def test_an_idle_start_does_not_read_first_traffic_as_a_stampede(
    service: CellService, clock: Clock
) -> None:
    """Traffic after idle seconds is not a 5x surge over a zero baseline."""
    for _ in range(3):
        _second(service, clock)
    for _ in range(3):  # spread latencies (p99 > 10 x p50) with traffic from nothing
        for i in range(50):
            service.ingress.meter.observe(f"u{i}", 0.001 if i else 0.5, 200, 100, did_work=True)
        clock.now += 1.0
        service.control.tick()
    assert not service.control.stampede.emergency
    assert _kinds(service, "stampede_protection") == []


def test_control_loop_off_turns_phase_defenses_down(service: CellService, clock: Clock) -> None:
    """A retry storm turns the phase defenses up; switching the control loop off turns them down."""
    service.clients.attempts["recommendations"] += 10
    service.clients.first_attempts["recommendations"] += 5
    service.clients.retries["recommendations"] += 5
    _second(service, clock)
    assert "phase_defenses" in service.control.loop.active()
    assert service.ingress.shedder.level.shed_fraction >= 0.3
    service.set_defenses(False, ["control_loop"])
    _second(service, clock)
    assert service.control.loop.active() == ()
    assert service.ingress.shedder.level.shed_fraction == 0.0
    assert _kinds(service, "phase_defenses") == ["activated", "deactivated"]


def _foreign_and_own(svc: CellService, foreign: int, own: int) -> tuple[list[str], list[str]]:
    """Users homed in another cell (`foreign` of them) and in this one, as the ring says."""
    others = [f"x{i}" for i in range(2000) if svc.ingress.boundary.home(f"x{i}") != svc.index]
    mine = [f"x{i}" for i in range(2000) if svc.ingress.boundary.home(f"x{i}") == svc.index]
    return others[:foreign], mine[:own]


def test_failover_traffic_lowers_isolation_and_reinforces_the_boundary(
    tmp_path: Path, clock: Clock
) -> None:
    """A second in which a third of the arrivals were other cells' users: isolation 2/3,
    cascade risk 0.2, the cascade response reinforces the boundary, foreign users are refused
    (payments included) and the cell's own are not; calm seconds relax it."""
    svc = _service(tmp_path, clock, cells=3)
    try:
        foreign, own = _foreign_and_own(svc, 10, 20)
        for user in foreign + own:
            assert svc.admission.check("profile", foreign=svc.ingress.boundary.arrive(user)) is None
        clock.now += 1.0
        report = svc.control.tick()
        assert svc.control.isolation == pytest.approx(2 / 3)
        assert svc.control.cascade_risk == pytest.approx(0.2)
        assert report.patterns["cascade"] == pytest.approx(1.0)
        assert svc.ingress.boundary.reinforced and _kinds(svc, "boundary_reinforcement") == [
            "activated"
        ]
        refusal = svc.admission.check("payments", foreign=svc.ingress.boundary.arrive(foreign[0]))
        assert refusal is not None and refusal.defense == "boundary_reinforcement"
        assert refusal.status == 503
        assert svc.admission.check("payments", foreign=svc.ingress.boundary.arrive(own[0])) is None
        for _ in range(6):
            for user in own:
                svc.ingress.boundary.arrive(user)
            clock.now += 1.0
            svc.control.tick()
        assert not svc.ingress.boundary.reinforced
        assert _kinds(svc, "boundary_reinforcement") == ["activated", "deactivated"]
    finally:
        svc.store.close()


def test_boundary_reinforcement_switched_off_never_refuses(tmp_path: Path, clock: Clock) -> None:
    """Off, the cascade is still measured and detected, but every user gets in."""
    svc = _service(tmp_path, clock, cells=3)
    try:
        svc.set_switches({"boundary_reinforcement": False})
        foreign, _ = _foreign_and_own(svc, 10, 0)
        for user in foreign:
            svc.ingress.boundary.arrive(user)
        clock.now += 1.0
        report = svc.control.tick()
        assert svc.control.cascade_risk == pytest.approx(0.6)
        assert "pattern:cascade" in report.active
        assert not svc.ingress.boundary.reinforced
        assert (
            svc.admission.check("profile", foreign=svc.ingress.boundary.arrive(foreign[0])) is None
        )
        assert _kinds(svc, "boundary_reinforcement") == []
    finally:
        svc.store.close()


def test_failing_shared_polls_are_cascade_risk(tmp_path: Path, clock: Clock) -> None:
    """Half the polls of the dependency every cell shares failed over the last 10 s: cascade
    risk 0.2; a lone failed poll is not counted, and the window forgets."""
    svc = _service(tmp_path, clock)
    try:
        svc.clients.shared["attempts"] += 2
        svc.clients.shared["failures"] += 1
        clock.now += 1.0
        svc.control.tick()
        assert svc.control.cascade_risk == 0.0  # 2 polls: too few to judge
        svc.clients.shared["attempts"] += 8
        svc.clients.shared["failures"] += 4
        clock.now += 1.0
        svc.control.tick()
        assert svc.control.isolation == 1.0
        assert svc.control.cascade_risk == pytest.approx(0.2)
        for _ in range(10):
            svc.clients.shared["attempts"] += 2
            clock.now += 1.0
            svc.control.tick()
        assert svc.control.cascade_risk == 0.0
    finally:
        svc.store.close()
