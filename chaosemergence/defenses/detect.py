"""Detectors: the signals that precede emergent failure, and the patterns they form.

Correlation of load (synchronization), call-graph complexity and the complexity budget
(what the load shedder is fed), cell isolation and cascade risk, metastable states,
cache stampedes and hot keys.
"""

from ._correlation import (
    CorrelationLevel,
    CorrelationReading,
    LoadSeries,
    align,
    correlation_level,
    max_pairwise_correlation,
    pearson,
)
from ._graph import average_clustering, betweenness_centrality, density, interaction_complexity
from ._isolation import CASCADE_ALERT, cascade_risk, isolation_score
from ._metastable import (
    MetastableCondition,
    MetastableDetector,
    MetastableThresholds,
    StuckState,
    SystemState,
)
from ._shedding import ComplexityBudget, ComplexityInputs, ComplexityWeights
from ._signals import EmergenceSignals, EmergenceThresholds
from ._xfetch import HotKeyTracker, StampedeDetector, StampedeSignals

__all__ = [
    "CASCADE_ALERT",
    "ComplexityBudget",
    "ComplexityInputs",
    "ComplexityWeights",
    "CorrelationLevel",
    "CorrelationReading",
    "EmergenceSignals",
    "EmergenceThresholds",
    "HotKeyTracker",
    "LoadSeries",
    "MetastableCondition",
    "MetastableDetector",
    "MetastableThresholds",
    "StampedeDetector",
    "StampedeSignals",
    "StuckState",
    "SystemState",
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
]
