"""Run an experiment's dynamics at `scale` times the rate: capacities and traffic, not time.

Every experiment sizes its system near saturation in configuration (the `system:` overrides
of the reference-system control: a dependency's workers and queue, a cell's workers...) and
its traffic in users. `scale` (the experiment's `scale` configuration key, `--var scale=5`)
multiplies both, so the same loops close at `scale` times the requests per second:

- every capacity of the system: each simulated dependency's `concurrency` and `queue_limit`
  (the defaults' too, not only the ones the experiment names), the shared dependency's, a
  cell's `cell_workers` (0, unlimited, stays 0) and `cell_queue_limit`, the load-shedding
  capacities (`cell_request_capacity`, `cell_user_capacity`, `cell_data_capacity_bytes`),
  and the shared dependency's own callers (`shared_pollers_per_cell`);
- a cell's memory, counted in requests: the limit and the leak stay in megabytes, each
  request's working set is divided by `scale`; and its one garbage collector, a serialized
  resource that cannot be multiplied, absorbs `scale` times the pauses because each is
  `scale` times shorter (the share of wall time it takes, what the GC breaker watches, is
  the same);
- the traffic: `users`, `spawn_rate` (the ramp takes as long) and the user base
  (`population`: the same share of cache misses).

Service times, timeouts, tolerances, windows and fault percentages are unchanged, so the
dynamics per unit of capacity are the same. `scale` 1 changes nothing. Pure, no I/O: the
reference-system and traffic controls call it (docs/scaling.md, "Experiments at scale").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final, cast

from chaosemergence.app.overrides import apply_overrides
from chaosemergence.app.settings import SystemSettings
from chaosemergence.traffic.runner import TrafficSpec

__all__ = [
    "SCALE_MAX",
    "SCALE_MIN",
    "parse_scale",
    "scale_system",
    "scale_traffic",
]

SCALE_MIN: Final = 1.0
SCALE_MAX: Final = 20.0

# Fields multiplied by `scale`: of every dependency, and of the system (integers stay integers).
DEPENDENCY_CAPACITIES: Final = ("concurrency", "queue_limit")
SYSTEM_CAPACITIES: Final = (
    "cell_workers",
    "cell_queue_limit",
    "cell_request_capacity",
    "cell_user_capacity",
    "cell_data_capacity_bytes",
    "shared_pollers_per_cell",
)
# Fields divided by `scale`: what one request costs of a resource that is not multiplied.
PER_REQUEST_COSTS: Final = ("request_working_set_kb", "gc_pause_max_ms")
# The built-in locustfile's user base when `load` does not name one.
DEFAULT_POPULATION: Final[int] = cast(
    int, {f.name: f for f in dataclasses.fields(TrafficSpec)}["population"].default
)


def parse_scale(value: Any) -> float:
    """`value` (a number, or its text as `--var scale=5` gives it) as a float in [1, 20]."""
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not SCALE_MIN <= number <= SCALE_MAX:
        raise ValueError(f"scale must be a number in [{SCALE_MIN:g}, {SCALE_MAX:g}], got {value!r}")
    return number


def _times(value: int | float, scale: float) -> int | float:
    """`value` x `scale`, an integer rounded half up when `value` is one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return math.floor(value * scale + 0.5)
    return value * scale


def scale_system(overrides: dict[str, Any] | None, scale: Any) -> dict[str, Any]:
    """The settings overrides that run `overrides` at `scale` times the capacity.

    Every capacity is written out (the defaults multiplied too), the rest of `overrides`
    kept as given. ValueError for a bad scale (naming `scale`) or bad overrides.
    """
    factor = parse_scale(scale)
    given = dict(overrides or {})
    if factor == 1:
        return given
    settings = apply_overrides(SystemSettings(), given)  # the values the system would run
    scaled: dict[str, Any] = dict(given)
    given_dependencies = given.get("dependencies") or {}
    scaled["dependencies"] = {
        name: {
            **given_dependencies.get(name, {}),
            **{f: _times(getattr(dependency, f), factor) for f in DEPENDENCY_CAPACITIES},
        }
        for name, dependency in settings.dependencies.items()
    }
    scaled["shared_dependency"] = {
        **(given.get("shared_dependency") or {}),
        **{
            f: _times(getattr(settings.shared_dependency, f), factor) for f in DEPENDENCY_CAPACITIES
        },
    }
    for name in SYSTEM_CAPACITIES:
        scaled[name] = _times(getattr(settings, name), factor)
    for name in PER_REQUEST_COSTS:
        scaled[name] = getattr(settings, name) / factor
    apply_overrides(SystemSettings(), scaled)  # still valid settings (bounds), or ValueError
    return scaled


def scale_traffic(
    users: Any, spawn_rate: Any, load: dict[str, Any] | None, scale: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """`users`, `spawn_rate` and `load` (TrafficSpec fields) at `scale` times the traffic.

    The user base (`population`, TrafficSpec's default unless `load` says) grows with the
    users; the hot keys, wait times and shapes do not. ValueError naming the field that is
    not a number.
    """
    factor = parse_scale(scale)
    scaled_load = dict(load or {})
    if factor == 1:
        return users, spawn_rate, scaled_load
    for name, value in (("users", users), ("spawn_rate", spawn_rate)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: must be a number to scale, got {value!r}")
    population = scaled_load.get("population", DEFAULT_POPULATION)
    if isinstance(population, bool) or not isinstance(population, int):
        raise ValueError(f"population: must be an integer to scale, got {population!r}")
    scaled_load["population"] = _times(population, factor)
    return _times(int(users), factor), float(spawn_rate) * factor, scaled_load
