"""The whole defense picture of one cell, as the JSON of ``/admin/state``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaosemergence.app.admission import Admission
    from chaosemergence.app.cell_timers import CellTimers
    from chaosemergence.app.control import CellControl
    from chaosemergence.app.dependency_clients import DependencyClients
    from chaosemergence.app.faults import FaultTable
    from chaosemergence.app.ingress import CellIngress
    from chaosemergence.app.memory import MemoryModel
    from chaosemergence.app.profile_cache import ProfileCache

__all__ = ["cell_state"]


def cell_state(
    index: int,
    enabled: dict[str, bool],
    faults: FaultTable,
    *,
    clients: DependencyClients,
    profiles: ProfileCache,
    ingress: CellIngress,
    admission: Admission,
    timers: CellTimers,
    memory: MemoryModel,
    control: CellControl,
    restart_requested: str | None,
) -> dict[str, Any]:
    """Switches, faults, and every defense's snapshot (one section per defense)."""
    return {
        "cell": index,
        "defenses": dict(enabled),
        "jitter_removed": timers.removed,
        "jitter_restored_by": timers.restored_by,
        "faults": faults.snapshot(),
        # breakers, breaker_trips, retry_budgets, throttles, dependencies
        **clients.state(),
        "cache": profiles.cache_state(),
        "coalescing": profiles.coalescing_state(),
        "precompute_jitter": profiles.precompute_jitter_state(),
        "boundary_reinforcement": {
            **ingress.boundary.snapshot(),
            "isolation_score": control.isolation,
            "cascade_risk": control.cascade_risk,
        },
        "early_expiration": {**profiles.xfetch.snapshot(), "refreshes": profiles.early_refreshes},
        "stampede_protection": control.stampede.snapshot(),
        "load_shedding": ingress.shedding_state(admission),
        "jitter": timers.jitter.snapshot(),
        "control_loop": control.snapshot(),
        "metastable_detector": control.metastable.snapshot(),
        "metastable_recovery": control.recovery.snapshot(),
        "memory": memory.snapshot(),
        "memory_guardrail": memory.guardrail.snapshot(),
        "gc_breaker": memory.gc_breaker.snapshot(),
        "predictive_restart": {
            **memory.predictive.snapshot(),
            "restart_requested": restart_requested,
        },
        "shared_dependency": {
            **clients.shared,
            "model_kept": clients.model_kept,
            "jobs": timers.jobs_state(),
        },
        "timers": {"naive": timers.naive(), "jitter": timers.timer_jitter().snapshot()},
    }
