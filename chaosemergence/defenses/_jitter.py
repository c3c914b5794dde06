"""Randomize timer intervals and delays so independent clients stop acting in lockstep."""

from __future__ import annotations

import random
from typing import Literal, get_args

from ._events import EventLog

__all__ = ["Distribution", "Jitter", "JitterStrategy", "adaptive_factor", "draw"]

JitterStrategy = Literal["uniform", "exponential", "gaussian", "adaptive", "correlated"]
Distribution = Literal["uniform", "exponential", "gaussian"]
_STRATEGIES: tuple[str, ...] = get_args(JitterStrategy)
_DISTRIBUTIONS: tuple[Distribution, ...] = ("uniform", "exponential", "gaussian")

DEFENSE = "jitter"

#: The seed's correlation levels for choosing how hard to jitter.
SAFE, WARNING, DANGER = 0.3, 0.5, 0.7


def adaptive_factor(correlation: float, base: float = 0.1) -> float:
    """Return the seed's adaptive jitter factor ``base * 2**(3c)`` (0.1 to 0.8 for c in [0, 1])."""
    c = min(max(abs(correlation), 0.0), 1.0)
    return float(base * 2.0 ** (3.0 * c))


class Jitter:
    """Spread an interval around its nominal value.

    Strategies (``factor`` is f, the interval is x):

    - ``uniform``: x * (1 + U(-f, f)), mean x;
    - ``exponential``: x + Exp(mean f * x), never earlier than x;
    - ``gaussian``: x * (1 + N(0, f)), clipped at 0;
    - ``adaptive``: f grows with measured correlation c as f * 2**(3c) (seed: 0.1 * 2**(3c)),
      drawn from this instance's own distribution so different services differ;
    - ``correlated``: the seed's ladder: below 0.3 uniform f/2, below 0.5 uniform f,
      below 0.7 exponential 2f, otherwise adaptive.

    ``maximum`` (the control loop's phase defense) jitters with the adaptive factor at
    c = 1 whatever the strategy. ``enabled=False`` returns the interval unchanged.
    """

    def __init__(
        self,
        strategy: JitterStrategy = "uniform",
        factor: float = 0.1,
        rng: random.Random | None = None,
        *,
        name: str = DEFENSE,
        correlation: float = 0.0,
        adaptive_distribution: Distribution | None = None,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        if strategy not in _STRATEGIES:
            msg = f"unknown jitter strategy {strategy!r}; choose one of {', '.join(_STRATEGIES)}"
            raise ValueError(msg)
        if factor < 0:
            msg = f"jitter factor must be >= 0, got {factor!r}"
            raise ValueError(msg)
        self.name = name
        self.strategy: JitterStrategy = strategy
        self.factor = factor
        self.rng = rng if rng is not None else random.Random()
        self.adaptive_distribution: Distribution = (
            adaptive_distribution
            if adaptive_distribution is not None
            else self.rng.choice(_DISTRIBUTIONS)
        )
        self.enabled = enabled
        self._events = events
        # Guarded by the event loop (plain attribute writes from the control loop).
        self.correlation = correlation
        self._maximum = False

    @property
    def maximum(self) -> bool:
        """Whether maximum jitter is forced on."""
        return self._maximum

    def set_maximum(self, on: bool, reason: str = "") -> None:
        """Force maximum jitter on or off, recording the change as an event."""
        if on == self._maximum:
            return
        self._maximum = on
        if self._events is not None:
            if on:
                why = reason or "maximum jitter"
                self._events.record(self.name, "activated", why, correlation=self.correlation)
            else:
                why = reason or "normal jitter"
                self._events.record(self.name, "deactivated", why, correlation=self.correlation)

    def effective(self) -> tuple[Distribution, float]:
        """Return the distribution and factor the next ``apply`` will use."""
        if self._maximum:
            return self.adaptive_distribution, adaptive_factor(1.0, self.factor)
        strategy = self.strategy
        if strategy == "adaptive":
            return self.adaptive_distribution, adaptive_factor(self.correlation, self.factor)
        if strategy == "correlated":
            c = abs(self.correlation)
            if c < SAFE:
                return "uniform", self.factor * 0.5
            if c < WARNING:
                return "uniform", self.factor
            if c < DANGER:
                return "exponential", self.factor * 2.0
            return self.adaptive_distribution, adaptive_factor(c, self.factor)
        return strategy, self.factor

    def apply(self, interval: float) -> float:
        """Return ``interval`` with jitter applied (never negative)."""
        if not self.enabled or interval <= 0:
            return interval
        distribution, f = self.effective()
        return max(0.0, draw(self.rng, distribution, interval, f))

    def phase(self, interval: float) -> float:
        """Return a random start offset in [0, interval) (phase randomization at start-up)."""
        if not self.enabled or interval <= 0:
            return 0.0
        return self.rng.uniform(0.0, interval)

    def reset(self) -> None:
        """Clear forced maximum jitter and the measured correlation."""
        self.set_maximum(False, "reset")
        self.correlation = 0.0

    def snapshot(self) -> dict[str, object]:
        """Return the strategy and current effective factor as JSON-able data."""
        distribution, f = self.effective()
        return {
            "name": self.name,
            "enabled": self.enabled,
            "strategy": self.strategy,
            "factor": self.factor,
            "correlation": self.correlation,
            "maximum": self._maximum,
            "distribution": distribution,
            "effective_factor": f,
        }


def draw(rng: random.Random, distribution: Distribution, interval: float, f: float) -> float:
    """Draw one jittered value of ``interval`` from ``distribution`` with factor ``f``."""
    if f <= 0:
        return interval
    if distribution == "uniform":
        return interval * (1.0 + rng.uniform(-f, f))
    if distribution == "exponential":
        return interval + rng.expovariate(1.0 / (f * interval))
    return interval * (1.0 + rng.gauss(0.0, f))
