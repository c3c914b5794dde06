"""Asyncio defenses against emergent failures: no HTTP, clock and randomness injected.

Every defense has ``name`` and ``enabled`` (False = naive pass-through), takes an
injected ``clock`` (and ``rng`` where it draws), records activations in an
``EventLog`` when given one, and offers ``snapshot()`` and ``reset()``.
"""

from .breaker import BreakerConfig, BreakerState, CircuitBreaker
from .errors import CircuitOpenError, DefenseError, LoadShedError
from .events import DefenseEvent, EventLog
from .hashring import HashRing, stable_hash
from .jitter import Jitter, adaptive_factor
from .retry import (
    Backoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FullJitterBackoff,
    RetryBudget,
    RetryPolicy,
)
from .signals import EmergenceSignals, EmergenceThresholds
from .singleflight import SingleFlight

__all__ = [
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "DecorrelatedJitterBackoff",
    "DefenseError",
    "DefenseEvent",
    "EmergenceSignals",
    "EmergenceThresholds",
    "EventLog",
    "ExponentialBackoff",
    "FullJitterBackoff",
    "HashRing",
    "Jitter",
    "LoadShedError",
    "RetryBudget",
    "RetryPolicy",
    "SingleFlight",
    "adaptive_factor",
    "stable_hash",
]
