"""Asyncio defenses against emergent failures: standard library only, clock and randomness injected.

The primitives most services need are here; detectors live in
``chaosemergence.defenses.detect``, the control loop, staged recovery and guardrails in
``chaosemergence.defenses.control``, metrics recorders (Prometheus among them) in
``chaosemergence.defenses.metrics``. Module files (``_*.py``) are private.

Every defense has ``name`` and ``enabled`` (False = naive pass-through), takes an
injected ``clock`` (and ``rng`` where it draws), records activations in an
``EventLog`` when given one, and offers ``snapshot()`` and ``reset()``. See
docs/defenses.md.
"""

from ._breaker import BreakerConfig, BreakerState, CircuitBreaker
from ._errors import CircuitOpenError, DefenseError, LoadShedError
from ._events import DefenseEvent, EventLog
from ._guard import Fallback, Guard
from ._hashring import HashRing, stable_hash
from ._jitter import Jitter
from ._recorder import MetricsRecorder
from ._retry import (
    Backoff,
    DecorrelatedJitterBackoff,
    ExponentialBackoff,
    FullJitterBackoff,
    RetryBudget,
    RetryPolicy,
)
from ._shedding import PRIORITIES, LoadShedder, ShedDecision
from ._singleflight import SingleFlight
from ._throttle import AdaptiveThrottle
from ._xfetch import ProbabilisticExpiry, should_refresh

__all__ = [
    "PRIORITIES",
    "AdaptiveThrottle",
    "Backoff",
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "DecorrelatedJitterBackoff",
    "DefenseError",
    "DefenseEvent",
    "EventLog",
    "ExponentialBackoff",
    "Fallback",
    "FullJitterBackoff",
    "Guard",
    "HashRing",
    "Jitter",
    "LoadShedError",
    "LoadShedder",
    "MetricsRecorder",
    "ProbabilisticExpiry",
    "RetryBudget",
    "RetryPolicy",
    "ShedDecision",
    "SingleFlight",
    "should_refresh",
    "stable_hash",
]
