"""Prometheus metrics of the reference system: names live here, values come from the services.

Cells expose their counters through a collector that reads the service objects at scrape
time (one source of truth, nothing to keep in sync); the gateway records user-visible
requests and latency directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# The series any service embedding the defenses exports come from the library: the same
# names, help texts and labels here as there (docs/defenses.md, "Metrics").
from chaosemergence.defenses.metrics import (
    BACKEND_COMPUTATIONS,
    BREAKER_RISK,
    BREAKER_STATE,
    BREAKER_STATE_VALUES,
    CACHE_REQUESTS,
    DEPENDENCY_ATTEMPTS,
    DEPENDENCY_RETRIES,
    FALLBACKS,
    LATENCY_BUCKETS,
    THROTTLED_CALLS,
    PrometheusRecorder,
    new_family,
    request_series,
)

if TYPE_CHECKING:
    from chaosemergence.app.cell_service import CellService

__all__ = [
    "BREAKER_STATE_VALUES",
    "LATENCY_BUCKETS",
    "CellCollector",
    "GatewayMetrics",
    "PrometheusRecorder",
]


class GatewayMetrics:
    """What users see: requests by route, cell and outcome; latency histogram in seconds."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # What users see, as every service embedding the library exports it.
        self.requests, self.latency = request_series(registry)
        self.gateway_retries = Counter(
            "emergence_gateway_retries",
            "Retries (and failovers) the gateway sent towards cells.",
            registry=registry,
        )
        self.gateway_retries_refused = Counter(
            "emergence_gateway_retries_refused",
            "Retries the gateway's retry budget refused (retry_budget on).",
            registry=registry,
        )
        self.reconnects = Counter(
            "emergence_gateway_reconnects",
            "Requests resent once because a cell closed the connection before answering "
            "(a cell restarting); not counted as retries.",
            registry=registry,
        )
        self.correlation = Gauge(
            "emergence_correlation",
            "Largest pairwise correlation of the cells' self-generated load on the shared "
            "dependency, over the control window.",
            registry=registry,
        )
        self.peak_to_mean = Gauge(
            "emergence_shared_peak_to_mean",
            "Peak over mean of the shared dependency's arrivals per bucket (control window).",
            registry=registry,
        )
        self.shared_calls = Counter(
            "emergence_shared_calls",
            "Calls the cells made to the shared dependency, by result.",
            ["cell", "result"],
            registry=registry,
        )
        self.cell_exits = Counter(
            "emergence_cell_exits",
            "Cell processes that ended, by reason (predictive_restart, oom_killed, killed, "
            "crashed, stopped).",
            ["cell", "reason"],
            registry=registry,
        )
        self.cell_up = Gauge(
            "emergence_cell_up",
            "1 while the cell's process runs (or is restarting on its socket).",
            ["cell"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "emergence_gateway_breaker_state",
            "The gateway's breaker in front of each cell: 0 closed, 1 open, 2 half-open, "
            "3 emergency.",
            ["cell"],
            registry=registry,
        )
        self.breaker_trips = Counter(
            "emergence_gateway_breaker_trips",
            "Trips of the gateway's breaker in front of each cell (entering open or emergency).",
            ["cell", "state"],
            registry=registry,
        )
        self.breaker_rejections = Counter(
            "emergence_gateway_breaker_rejections",
            "User requests the gateway's breaker answered 503 without calling the cell.",
            ["cell"],
            registry=registry,
        )
        self.writes_lost = Gauge(
            "emergence_acknowledged_writes_lost",
            "Payments the cell acknowledged that its database does not hold (missing at two "
            "checks 5 s apart; chaosemergence.observe.lost_writes).",
            ["cell"],
            registry=registry,
        )


class CellCollector(Collector):
    """Reads one cell's counters and gauges at scrape time."""

    def __init__(self, cell: CellService) -> None:
        self._cell = cell

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cell = self._cell
        clients, profiles = cell.clients, cell.profiles
        label = str(cell.index)
        attempts = new_family(DEPENDENCY_ATTEMPTS)
        retries = new_family(DEPENDENCY_RETRIES)
        outcomes = CounterMetricFamily(
            "emergence_dependency_results",
            "Dependency attempts by result.",
            labels=["cell", "dependency", "result"],
        )
        fallbacks = new_family(FALLBACKS)
        in_flight = GaugeMetricFamily(
            "emergence_dependency_in_flight", "Calls being served.", labels=["cell", "dependency"]
        )
        waiting = GaugeMetricFamily(
            "emergence_dependency_queue_depth", "Calls queued.", labels=["cell", "dependency"]
        )
        breaker = new_family(BREAKER_STATE)
        risk = new_family(BREAKER_RISK)
        trips = CounterMetricFamily(
            "emergence_breaker_trips",
            "Breaker trips: a breaker entering open or emergency.",
            labels=["cell", "dependency", "state"],
        )
        for name, dep in clients.dependencies.items():
            attempts.add_metric([label, name], clients.attempts[name])
            retries.add_metric([label, name], clients.retries[name])
            stats = dep.stats
            for result, value in (
                ("success", stats.succeeded),
                ("timeout", stats.timeouts),
                ("error", stats.errors),
                ("overloaded", stats.overloaded),
                ("wasted", stats.wasted),
                ("drained", stats.drained),
            ):
                outcomes.add_metric([label, name, result], value)
            fallbacks.add_metric([label, name], clients.fallbacks[name])
            in_flight.add_metric([label, name], dep.in_flight)
            waiting.add_metric([label, name], dep.waiting)
        for name, guard in clients.named_breakers().items():
            state = guard.state.name.lower()
            breaker.add_metric([label, name], BREAKER_STATE_VALUES.get(state, -1))
            risk.add_metric([label, name], guard.emergence_risk)
            for to in ("open", "emergency"):
                trips.add_metric([label, name, to], clients.breaker_trips.get((name, to), 0))
        yield from (
            attempts,
            retries,
            outcomes,
            fallbacks,
            in_flight,
            waiting,
            breaker,
            risk,
            trips,
        )
        throttled = new_family(THROTTLED_CALLS)
        for name, value in clients.throttled.items():
            throttled.add_metric([label, name], value)
        yield throttled

        cache = new_family(CACHE_REQUESTS)
        cache.add_metric([label, "hit"], profiles.cache.hits)
        cache.add_metric([label, "miss"], profiles.cache.misses)
        cache.add_metric([label, "stale"], profiles.cache.stale)
        yield cache
        missed_keys = CounterMetricFamily(
            "emergence_cache_missed_keys",
            "Distinct profile keys missed (once per key until a value is stored for it again).",
            labels=["cell"],
        )
        missed_keys.add_metric([label], profiles.cache.missed_keys)
        yield missed_keys
        early = CounterMetricFamily(
            "emergence_early_refreshes",
            "Cached profiles refreshed before expiry by probabilistic early expiration.",
            labels=["cell"],
        )
        early.add_metric([label], profiles.early_refreshes)
        yield early
        computations = new_family(BACKEND_COMPUTATIONS)
        computations.add_metric([label], profiles.computations)
        yield computations
        coalesced = CounterMetricFamily(
            "emergence_coalesced_requests",
            "Users' cache misses that joined a computation already in flight for their key "
            "instead of starting one (request coalescing).",
            labels=["cell"],
        )
        coalesced.add_metric([label], profiles.coalesced)
        yield coalesced
        stale = CounterMetricFamily(
            "emergence_stale_fallbacks",
            "Profiles served stale because the database path failed (the breaker's fallback).",
            labels=["cell"],
        )
        stale.add_metric([label], profiles.stale_fallbacks)
        yield stale
        delays = CounterMetricFamily(
            "emergence_precompute_jitter_delays",
            "Computations delayed by 0-100 ms of jitter while correlation was above 0.5.",
            labels=["cell"],
        )
        delays.add_metric([label], profiles.precompute_jitter_delays)
        yield delays
        prewarms = CounterMetricFamily(
            "emergence_prewarm_computations",
            "Profile computations made by cache prewarming (not by a user's miss).",
            labels=["cell"],
        )
        prewarms.add_metric([label], profiles.prewarm_computations)
        yield prewarms
        self_calls = CounterMetricFamily(
            "emergence_self_generated_calls",
            "Calls the cell makes on its own schedule (periodic jobs) or as retries.",
            labels=["cell", "kind"],
        )
        for kind, value in clients.self_calls.items():
            self_calls.add_metric([label, kind], value)
        yield self_calls
        enabled = GaugeMetricFamily(
            "emergence_defense_enabled",
            "1 when the defense is switched on.",
            labels=["cell", "defense"],
        )
        for name, on in cell.enabled.items():
            enabled.add_metric([label, name], 1.0 if on else 0.0)
        yield enabled
        yield from _control_metrics(cell, label)
        yield from _memory_metrics(cell, label)


RECOVERY_PHASE_VALUES = {"idle": 0, "paused": 1, "restoring": 2, "manual": 3}


def _control_metrics(
    cell: CellService, label: str
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    shed = CounterMetricFamily(
        "emergence_shed_requests",
        "User requests refused at admission, by the defense that refused them.",
        labels=["cell", "defense"],
    )
    for defense, value in cell.admission.refused.items():
        shed.add_metric([label, defense], value)
    yield shed
    shedder = cell.ingress.shedder
    score = GaugeMetricFamily(
        "emergence_complexity_score", "The cell's complexity score (0..1).", labels=["cell"]
    )
    score.add_metric([label], shedder.score)
    yield score
    fraction = GaugeMetricFamily(
        "emergence_shed_fraction",
        "Share of load the shedder's current level sheds (0, 0.1, 0.3, 0.7 or an override).",
        labels=["cell"],
    )
    fraction.add_metric([label], shedder.level.shed_fraction if shedder.enabled else 0.0)
    yield fraction
    recovery = cell.control.recovery
    phase = GaugeMetricFamily(
        "emergence_recovery_phase",
        "Staged recovery phase: 0 idle, 1 paused, 2 restoring, 3 held for manual intervention.",
        labels=["cell"],
    )
    phase.add_metric([label], RECOVERY_PHASE_VALUES.get(recovery.phase.value, -1))
    yield phase
    admitted = GaugeMetricFamily(
        "emergence_recovery_admit_fraction",
        "Share of non-critical ingress the staged recovery admits (1 when idle).",
        labels=["cell"],
    )
    admitted.add_metric([label], recovery.admit_fraction)
    yield admitted
    metastable = GaugeMetricFamily(
        "emergence_metastable",
        "1 while the metastable detector holds a condition.",
        labels=["cell"],
    )
    metastable.add_metric([label], 1.0 if cell.control.metastable.condition else 0.0)
    yield metastable
    stampede = GaugeMetricFamily(
        "emergence_stampede_emergency",
        "1 while stampede protection is in emergency mode.",
        labels=["cell"],
    )
    stampede.add_metric([label], 1.0 if cell.control.stampede.emergency else 0.0)
    yield stampede
    report = cell.control.last_report
    phase_risk = GaugeMetricFamily(
        "emergence_phase_transition_risk",
        "The control loop's proximity to a phase transition at its last tick (0..1; it turns "
        "the phase defenses up above 0.7).",
        labels=["cell"],
    )
    phase_risk.add_metric([label], report.phase_risk if report is not None else 0.0)
    yield phase_risk
    isolation = GaugeMetricFamily(
        "emergence_isolation_score",
        "The seed's isolation score: 1 - the share of the cell's requests that came from "
        "users homed in another cell (1 = perfectly isolated), over the last second.",
        labels=["cell"],
    )
    isolation.add_metric([label], cell.control.isolation)
    yield isolation
    cascade = GaugeMetricFamily(
        "emergence_cascade_risk",
        "The seed's cascade risk: 0.6 x cross-cell traffic + 0.4 x failing shared "
        "resources (alert above 0.1).",
        labels=["cell"],
    )
    cascade.add_metric([label], cell.control.cascade_risk)
    yield cascade
    reinforced = GaugeMetricFamily(
        "emergence_boundary_reinforced",
        "1 while the cell refuses users homed in other cells (reinforced boundaries).",
        labels=["cell"],
    )
    reinforced.add_metric([label], 1.0 if cell.ingress.boundary.reinforced else 0.0)
    yield reinforced
    manual = GaugeMetricFamily(
        "emergence_manual_intervention_required",
        "1 while the staged recovery gave up after repeated relapses and holds ingress "
        "until an operator resumes it.",
        labels=["cell"],
    )
    manual.add_metric([label], 1.0 if cell.control.recovery.waiting_for_operator else 0.0)
    yield manual
    patterns = GaugeMetricFamily(
        "emergence_pattern_probability",
        "The control loop's probability of each emergent pattern at its last tick.",
        labels=["cell", "pattern"],
    )
    if report is not None:
        for pattern, probability in report.patterns.items():
            patterns.add_metric([label, pattern], probability)
    yield patterns
    jitter = GaugeMetricFamily(
        "emergence_jitter_factor",
        "The jitter factor the cell's timers use now (0 when its timers are naively aligned).",
        labels=["cell"],
    )
    timers = cell.timers
    jitter.add_metric([label], 0.0 if timers.naive() else timers.timer_jitter().effective()[1])
    yield jitter


def _memory_metrics(
    cell: CellService, label: str
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    memory = cell.memory
    used = GaugeMetricFamily(
        "emergence_memory_used_bytes",
        "Accounted memory: ballast plus the working set of requests in flight.",
        labels=["cell"],
    )
    used.add_metric([label], memory.used_bytes())
    yield used
    limit = GaugeMetricFamily(
        "emergence_memory_limit_bytes", "The cell's memory limit.", labels=["cell"]
    )
    limit.add_metric([label], memory.limit_bytes)
    yield limit
    ballast = GaugeMetricFamily(
        "emergence_memory_ballast_bytes", "Memory leaked by injected pressure.", labels=["cell"]
    )
    ballast.add_metric([label], memory.ballast_bytes)
    yield ballast
    gc_time = CounterMetricFamily(
        "emergence_gc_pause_seconds",
        "Modelled stop-the-world GC pauses paid by requests, in seconds.",
        labels=["cell"],
    )
    gc_time.add_metric([label], memory.gc_seconds)
    yield gc_time
