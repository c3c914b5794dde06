"""The control loop and what it turns: pattern detection, staged recovery, guardrails.

The 1-second loop that detects the six emergent patterns and turns defenses up, the
metastable recovery that restores traffic in steps, the shedding levels it moves the load
shedder through, the adaptive jitter factor, and the death-spiral guardrails.
"""

from ._control_loop import (
    PATTERNS,
    ControlLoop,
    ControlLoopConfig,
    LoopInputs,
    LoopReport,
    PatternDetector,
)
from ._guardrails import GcPressureBreaker, GuardrailLevel, MemoryGuardrail, PredictiveRestart
from ._jitter import adaptive_factor
from ._metastable import (
    MANUAL_INTERVENTION,
    RESTORE_STEPS,
    RecoveryAction,
    RecoveryPhase,
    StagedRecovery,
)
from ._shedding import CRITICAL_FEATURES, EMERGENCY, GREEN, RED, YELLOW, ShedLevel

#: The load shedder's levels, mildest first.
SHED_LEVELS: tuple[ShedLevel, ...] = (GREEN, YELLOW, RED, EMERGENCY)

__all__ = [
    "CRITICAL_FEATURES",
    "EMERGENCY",
    "GREEN",
    "MANUAL_INTERVENTION",
    "PATTERNS",
    "RED",
    "RESTORE_STEPS",
    "SHED_LEVELS",
    "YELLOW",
    "ControlLoop",
    "ControlLoopConfig",
    "GcPressureBreaker",
    "GuardrailLevel",
    "LoopInputs",
    "LoopReport",
    "MemoryGuardrail",
    "PatternDetector",
    "PredictiveRestart",
    "RecoveryAction",
    "RecoveryPhase",
    "ShedLevel",
    "StagedRecovery",
    "adaptive_factor",
]
