"""Asyncio defenses against emergent failures: no HTTP, clock and randomness injected.

Every defense has ``name`` and ``enabled`` (False = naive pass-through), takes an
injected ``clock`` (and ``rng`` where it draws), records activations in an
``EventLog`` when given one, and offers ``snapshot()`` and ``reset()``. Metrics go
through a small ``MetricsRecorder`` interface (``recorder=``; a no-op by default): the
EventLog counts every activation, and breakers, retry policies, throttles, single-flight
and the load shedder count what they refuse, share or shed.
"""

from .breaker import BreakerConfig, BreakerState, CircuitBreaker
from .control_loop import (
    PATTERNS,
    ControlLoop,
    ControlLoopConfig,
    LoopInputs,
    LoopReport,
    PatternDetector,
)
from .correlation import (
    CorrelationLevel,
    CorrelationReading,
    LoadSeries,
    align,
    correlation_level,
    max_pairwise_correlation,
    pearson,
)
from .errors import CircuitOpenError, DefenseError, LoadShedError
from .events import DefenseEvent, EventLog
from .graph import average_clustering, betweenness_centrality, density, interaction_complexity
from .guardrails import GcPressureBreaker, GuardrailLevel, MemoryGuardrail, PredictiveRestart
from .hashring import HashRing, stable_hash
from .isolation import CASCADE_ALERT, cascade_risk, isolation_score
from .jitter import Jitter, adaptive_factor
from .metastable import (
    MANUAL_INTERVENTION,
    RESTORE_STEPS,
    MetastableCondition,
    MetastableDetector,
    MetastableThresholds,
    RecoveryAction,
    RecoveryPhase,
    StagedRecovery,
    StuckState,
    SystemState,
)
from .recorder import NULL_RECORDER, InMemoryRecorder, MetricsRecorder, NullRecorder
from .retry import (
    Backoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FullJitterBackoff,
    RetryBudget,
    RetryPolicy,
)
from .shedding import (
    PRIORITIES,
    ComplexityBudget,
    ComplexityInputs,
    ComplexityWeights,
    LoadShedder,
    ShedDecision,
    ShedLevel,
)
from .signals import EmergenceSignals, EmergenceThresholds
from .singleflight import SingleFlight
from .throttle import AdaptiveThrottle
from .xfetch import (
    HotKeyTracker,
    ProbabilisticExpiry,
    StampedeDetector,
    StampedeSignals,
    should_refresh,
)

__all__ = [
    "CASCADE_ALERT",
    "MANUAL_INTERVENTION",
    "NULL_RECORDER",
    "PATTERNS",
    "PRIORITIES",
    "RESTORE_STEPS",
    "AdaptiveThrottle",
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "ComplexityBudget",
    "ComplexityInputs",
    "ComplexityWeights",
    "ControlLoop",
    "ControlLoopConfig",
    "CorrelationLevel",
    "CorrelationReading",
    "DecorrelatedJitterBackoff",
    "DefenseError",
    "DefenseEvent",
    "EmergenceSignals",
    "EmergenceThresholds",
    "EventLog",
    "ExponentialBackoff",
    "FullJitterBackoff",
    "GcPressureBreaker",
    "GuardrailLevel",
    "HashRing",
    "HotKeyTracker",
    "InMemoryRecorder",
    "Jitter",
    "LoadSeries",
    "LoadShedError",
    "LoadShedder",
    "LoopInputs",
    "LoopReport",
    "MemoryGuardrail",
    "MetastableCondition",
    "MetastableDetector",
    "MetastableThresholds",
    "MetricsRecorder",
    "NullRecorder",
    "PatternDetector",
    "PredictiveRestart",
    "ProbabilisticExpiry",
    "RecoveryAction",
    "RecoveryPhase",
    "RetryBudget",
    "RetryPolicy",
    "ShedDecision",
    "ShedLevel",
    "SingleFlight",
    "StagedRecovery",
    "StampedeDetector",
    "StampedeSignals",
    "StuckState",
    "SystemState",
    "adaptive_factor",
    "align",
    "average_clustering",
    "betweenness_centrality",
    "cascade_risk",
    "correlation_level",
    "density",
    "interaction_complexity",
    "isolation_score",
    "max_pairwise_correlation",
    "pearson",
    "should_refresh",
    "stable_hash",
]
