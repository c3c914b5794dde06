"""The defense switches of a cell: names, and what switching each one on or off does.

Switching a defense off stops it acting at once (and it records that in its events);
switching one on while the control loop already has a response up (synchronization
detected, phase defenses) joins that response at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaosemergence.app.cell_timers import CellTimers
    from chaosemergence.app.control import CellControl
    from chaosemergence.app.dependency_clients import DependencyClients
    from chaosemergence.app.ingress import CellIngress
    from chaosemergence.app.memory import MemoryModel
    from chaosemergence.app.profile_cache import ProfileCache

__all__ = ["ALL_DEFENSES", "DEFENSES", "GATEWAY_DEFENSES", "apply_switches"]

# The defenses a cell can switch on and off (names used by the admin API and the probes;
# each is also the name of the events it records). `circuit_breaker` covers every breaker
# on the cell's boundaries (its dependencies and the shared-config poll) and, at the
# gateway, the breakers in front of each cell; `retry_budget` the gateway's budget too.
DEFENSES: tuple[str, ...] = (
    "circuit_breaker",
    "retry_budget",
    "adaptive_throttle",
    "load_shedding",
    "request_coalescing",
    "cache_prewarming",
    "early_expiration",
    "stampede_protection",
    "jitter",
    "precompute_jitter",
    "metastable_detector",
    "metastable_recovery",
    "memory_guardrail",
    "gc_breaker",
    "predictive_restart",
    "control_loop",
    "boundary_reinforcement",
)
# The gateway's own: routing users to their home cell only (the cascade defense).
GATEWAY_DEFENSES: tuple[str, ...] = ("cellular_routing",)
ALL_DEFENSES: tuple[str, ...] = (*DEFENSES, *GATEWAY_DEFENSES)


def apply_switches(
    enabled: dict[str, bool],
    switches: dict[str, bool],
    *,
    clients: DependencyClients,
    profiles: ProfileCache,
    ingress: CellIngress,
    timers: CellTimers,
    memory: MemoryModel,
    control: CellControl,
) -> None:
    """Set ``switches`` in ``enabled`` (unknown names ignored) and bring every defense object
    of the cell's parts in line."""
    changed = {n for n, on in switches.items() if n in DEFENSES and enabled[n] != on}
    enabled.update({n: on for n, on in switches.items() if n in DEFENSES})
    on = enabled
    clients.switch(
        breakers=on["circuit_breaker"],
        budgets=on["retry_budget"],
        throttles=on["adaptive_throttle"],
        reset="adaptive_throttle" in changed and not on["adaptive_throttle"],
    )
    loop, shedder, boundary, jitter = control.loop, ingress.shedder, ingress.boundary, timers.jitter
    shedder.enabled = on["load_shedding"]
    loop.shedder = shedder if on["load_shedding"] else None
    profiles.xfetch.enabled = on["early_expiration"]
    control.stampede.enabled = on["stampede_protection"]
    jitter.enabled = on["jitter"]
    loop.jitters = [jitter] if on["jitter"] else []
    control.metastable.enabled = on["metastable_detector"]
    control.recovery.enabled = on["metastable_recovery"]
    memory.guardrail.enabled = on["memory_guardrail"]
    memory.gc_breaker.enabled = on["gc_breaker"]
    memory.predictive.enabled = on["predictive_restart"]
    loop.enabled = on["control_loop"]
    boundary.enabled = on["boundary_reinforcement"]
    turned_off = {n for n in changed if not on[n]}
    turned_on = changed - turned_off
    # A defense switched off stops acting at once (and says so in its events).
    if "load_shedding" in turned_off:
        shedder.reset()
    if "stampede_protection" in turned_off:
        control.stampede.reset()
    if "jitter" in turned_off:
        jitter.reset()
    if "metastable_detector" in turned_off:
        control.metastable.reset()
    if turned_off & {"metastable_recovery", "control_loop"}:
        control.recovery.reset()
    if "memory_guardrail" in turned_off:
        memory.guardrail.reset()
    if "gc_breaker" in turned_off:
        memory.gc_breaker.reset()
    if turned_off & {"boundary_reinforcement", "control_loop"}:
        boundary.reset()
    # A defense switched on joins the responses the control loop already has up.
    active = loop.active() if loop.enabled else ()
    sync = "pattern:synchronization" in active
    phase = "phase_defenses" in active
    if "jitter" in turned_on and (sync or phase):
        jitter.set_maximum(True, "control loop response already active")
        if sync:
            timers.restore("synchronization already detected")
    if "load_shedding" in turned_on and phase:
        shedder.emergency_shed(loop.config.emergency_shed, "phase defenses active")
    if "boundary_reinforcement" in turned_on and (phase or "pattern:cascade" in active):
        boundary.reinforce(True, "control loop response already active")
