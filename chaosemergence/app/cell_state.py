"""The whole defense picture of one cell, as the JSON of ``/admin/state``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chaosemergence.app.admission import ROUTE_CLASSES

if TYPE_CHECKING:
    from chaosemergence.app.cell_service import CellService

__all__ = ["cell_state"]


def cell_state(svc: CellService) -> dict[str, Any]:
    """Switches, faults, and every defense's snapshot (one section per defense)."""
    control = svc.control
    memory = svc.memory
    return {
        "cell": svc.index,
        "defenses": dict(svc.enabled),
        "jitter_removed": svc.jitter_removed,
        "jitter_restored_by": svc.jitter_restored_by,
        "faults": svc.faults.snapshot(),
        "breakers": {name: b.snapshot() for name, b in svc.named_breakers().items()},
        "breaker_trips": {f"{name}:{state}": n for (name, state), n in svc.breaker_trips.items()},
        "retry_budgets": {name: b.snapshot() for name, b in svc.budgets.items()},
        "throttles": {name: t.snapshot() for name, t in svc.throttles.items()},
        "dependencies": {
            name: {
                "in_flight": d.in_flight,
                "waiting": d.waiting,
                "capacity_per_second": d.capacity_per_second,
                **vars(d.stats),
            }
            for name, d in svc.dependencies.items()
        },
        "cache": {
            "entries": len(svc.cache),
            "hits": svc.cache.hits,
            "misses": svc.cache.misses,
            "stale": svc.cache.stale,
            "hot_keys": sorted(svc.cache.hot_keys)[:20],
        },
        "coalescing": {
            "computations": svc.computations,
            "prewarm_computations": svc.prewarm_computations,
            "coalesced": svc.coalesced,
            "waiting": svc.coalescing_waiters,
            "stale_fallbacks": svc.stale_fallbacks,
        },
        "precompute_jitter": {
            "enabled": svc.enabled["precompute_jitter"],
            "delays": svc.precompute_jitter_delays,
            "seconds": svc.precompute_jitter_seconds,
            "correlation": control.fresh_correlation(),
        },
        "boundary_reinforcement": {
            **svc.boundary.snapshot(),
            "isolation_score": control.isolation,
            "cascade_risk": control.cascade_risk,
        },
        "early_expiration": {**svc.xfetch.snapshot(), "refreshes": svc.early_refreshes},
        "stampede_protection": control.stampede.snapshot(),
        "load_shedding": {
            **svc.shedder.snapshot(),
            "refused": dict(svc.admission.refused),
            "priorities": {route: c.priority for route, c in ROUTE_CLASSES.items()},
        },
        "jitter": svc.jitter.snapshot(),
        "control_loop": control.snapshot(),
        "metastable_detector": control.metastable.snapshot(),
        "metastable_recovery": control.recovery.snapshot(),
        "memory": memory.snapshot(),
        "memory_guardrail": memory.guardrail.snapshot(),
        "gc_breaker": memory.gc_breaker.snapshot(),
        "predictive_restart": {
            **memory.predictive.snapshot(),
            "restart_requested": svc.restart_reason,
        },
        "shared_dependency": {
            **svc.shared,
            "model_kept": svc.model_kept,
            "jobs": {
                j.name: {
                    "runs": j.runs,
                    "errors": j.errors,
                    "retries": j.retries,
                    "rephased": j.rephased,
                }
                for j in svc.jobs
            },
        },
        "timers": {"naive": svc.timers_naive(), "jitter": svc.timer_jitter().snapshot()},
    }
