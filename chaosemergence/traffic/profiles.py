"""Pure load-profile math shared by the locustfile and the runner: no locust, no gevent.

The locustfile runs inside Locust's gevent-patched subprocess and imports this module;
the runner (and the tests) import it in ordinary processes. Keeping the arithmetic here
means it can be unit-tested without ever importing locust.

The locustfile is configured through environment variables, named by the ``ENV_*``
constants below; :class:`LoadConfig` reads them in one place.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "ENV_CONFIG_READS",
    "ENV_DEADLINE",
    "ENV_HOT_KEYS",
    "ENV_HOT_SHARE",
    "ENV_PATH",
    "ENV_POPULATION",
    "ENV_READY_FILE",
    "ENV_REQUEST_TIMEOUT",
    "ENV_SEED",
    "ENV_SHAPE",
    "ENV_SPIKE_FRACTION",
    "ENV_SPIKE_MULTIPLIER",
    "ENV_SYNC_PERIOD",
    "ENV_WAIT_MAX",
    "ENV_WAIT_MIN",
    "SHAPES",
    "LoadConfig",
    "hot_key_ids",
    "pick_user_id",
    "spike_user_count",
    "sync_delay",
]

SHAPES: frozenset[str] = frozenset({"steady", "spike", "synchronized"})

ENV_SHAPE = "EMERGENCE_SHAPE"
ENV_SEED = "EMERGENCE_SEED"
ENV_POPULATION = "EMERGENCE_USERS_POPULATION"
ENV_HOT_KEYS = "EMERGENCE_HOT_KEYS"
ENV_HOT_SHARE = "EMERGENCE_HOT_SHARE"
ENV_WAIT_MIN = "EMERGENCE_WAIT_MIN"
ENV_WAIT_MAX = "EMERGENCE_WAIT_MAX"
ENV_SYNC_PERIOD = "EMERGENCE_SYNC_PERIOD"
ENV_SPIKE_MULTIPLIER = "EMERGENCE_SPIKE_MULTIPLIER"
ENV_SPIKE_FRACTION = "EMERGENCE_SPIKE_FRACTION"
ENV_REQUEST_TIMEOUT = "EMERGENCE_REQUEST_TIMEOUT"
ENV_DEADLINE = "EMERGENCE_DEADLINE"
ENV_READY_FILE = "EMERGENCE_READY_FILE"
ENV_CONFIG_READS = "EMERGENCE_CONFIG_READS"
# One path every user GETs, nothing else (`make bench`'s load-generation figures); unset: the mix.
ENV_PATH = "EMERGENCE_PATH"


@dataclass(frozen=True)
class LoadConfig:
    """What the locustfile needs to know, as read from its environment."""

    shape: str = "steady"
    seed: int = 42
    population: int = 10_000
    hot_keys: int = 20
    hot_share: float = 0.5
    wait_min: float = 0.5
    wait_max: float = 1.5
    sync_period: float = 1.0
    spike_multiplier: float = 4.0
    spike_fraction: float = 1 / 3
    request_timeout: float = 10.0
    deadline: float | None = None
    ready_file: str | None = None
    config_reads: int = 0
    path: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoadConfig:
        """Read the configuration from ``environ`` (default ``os.environ``); unset means default."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                msg = f"{name} must be a number, got {raw!r}"
                raise ValueError(msg) from None
            if not math.isfinite(value):
                msg = f"{name} must be finite, got {raw!r}"
                raise ValueError(msg)
            return value

        def integer(name: str, default: int) -> int:
            value = number(name, default)
            if value != int(value):
                msg = f"{name} must be an integer, got {env.get(name)!r}"
                raise ValueError(msg)
            return int(value)

        shape = env.get(ENV_SHAPE) or defaults.shape
        if shape not in SHAPES:
            msg = f"{ENV_SHAPE} must be one of {sorted(SHAPES)}, got {shape!r}"
            raise ValueError(msg)
        deadline_raw = env.get(ENV_DEADLINE)
        return cls(
            shape=shape,
            seed=integer(ENV_SEED, defaults.seed),
            population=max(1, integer(ENV_POPULATION, defaults.population)),
            hot_keys=max(0, integer(ENV_HOT_KEYS, defaults.hot_keys)),
            hot_share=min(1.0, max(0.0, number(ENV_HOT_SHARE, defaults.hot_share))),
            wait_min=max(0.0, number(ENV_WAIT_MIN, defaults.wait_min)),
            wait_max=max(0.0, number(ENV_WAIT_MAX, defaults.wait_max)),
            sync_period=number(ENV_SYNC_PERIOD, defaults.sync_period),
            spike_multiplier=number(ENV_SPIKE_MULTIPLIER, defaults.spike_multiplier),
            spike_fraction=number(ENV_SPIKE_FRACTION, defaults.spike_fraction),
            request_timeout=number(ENV_REQUEST_TIMEOUT, defaults.request_timeout),
            deadline=float(deadline_raw) if deadline_raw else None,
            ready_file=env.get(ENV_READY_FILE) or None,
            config_reads=max(0, integer(ENV_CONFIG_READS, defaults.config_reads)),
            path=env.get(ENV_PATH) or "",
        )


def hot_key_ids(seed: int, population: int, hot_keys: int) -> list[int]:
    """The hot user ids (1-based): the same ``hot_keys`` ids for every process given one seed."""
    count = max(0, min(hot_keys, population))
    return sorted(random.Random(f"hot-keys/{seed}").sample(range(1, population + 1), count))


def pick_user_id(rng: random.Random, population: int, hot: list[int], hot_share: float) -> int:
    """A user id: one of ``hot`` with probability ``hot_share``, else uniform over all users."""
    if hot and rng.random() < hot_share:
        return hot[rng.randrange(len(hot))]
    return rng.randint(1, population)


def sync_delay(now: float, period: float) -> float:
    """Seconds from wall-clock ``now`` to the next multiple of ``period`` (never zero).

    Every user in every process that sleeps this long wakes at the same instant, which is
    what makes the ``synchronized`` shape fire in lockstep.
    """
    delay = period - math.fmod(now, period)
    return delay if delay > 1e-6 else period


def spike_user_count(
    elapsed: float, duration: float, peak: int, multiplier: float, fraction: float
) -> int | None:
    """User count of the ``spike`` shape at ``elapsed`` seconds, or None once it is over.

    ``peak`` users run during the middle ``fraction`` of ``duration`` (centred); before
    and after it a baseline of ``ceil(peak / multiplier)`` users runs.
    """
    if elapsed >= duration:
        return None
    baseline = max(1, math.ceil(peak / multiplier))
    start = duration * (1 - fraction) / 2
    if start <= elapsed < duration - start:
        return peak
    return baseline
