"""`scale`: the same experiment at `scale` times the capacity and the traffic (pure functions).

Every expectation is derived from the experiment's own YAML and the system's defaults, read
through the same `apply_overrides` the system applies at start, never written out here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosemergence.app.overrides import apply_overrides
from chaosemergence.app.settings import SystemSettings
from chaosemergence.controls.reference_system import system_overrides
from chaosemergence.scaling import (
    DEFAULT_POPULATION,
    DEPENDENCY_CAPACITIES,
    PER_REQUEST_COSTS,
    SYSTEM_CAPACITIES,
    parse_scale,
    scale_system,
    scale_traffic,
)

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
PROFILE = yaml.safe_load((ROOT / ".ci/profiles/ci.yaml").read_text())["configuration"]


def with_profile(value: Any) -> Any:
    """`value` with each `${name}` replaced by the CI profile's value, as `chaos run` does."""
    if isinstance(value, dict):
        return {k: with_profile(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("${") and value[2:-1] in PROFILE:
        return PROFILE[value[2:-1]]
    return value


def control_arguments(path: Path, module: str) -> dict[str, Any]:
    experiment = yaml.safe_load(path.read_text())
    for control in experiment["controls"]:
        if control["provider"]["module"] == module:
            arguments: dict[str, Any] = control["provider"].get("arguments") or {}
            return {k: v if k == "scale" else with_profile(v) for k, v in arguments.items()}
    raise AssertionError(f"{path.name} has no {module} control")


def system_of(path: Path, loop: str = "on") -> dict[str, Any]:
    arguments = control_arguments(path, "chaosemergence.controls.reference_system")
    return system_overrides(arguments.get("system"), loop, arguments.get("loop_cut"))


def effective(overrides: dict[str, Any]) -> SystemSettings:
    return apply_overrides(SystemSettings(), overrides)


@pytest.mark.parametrize("loop", ["on", "cut"])
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", [5, 2.5])
def test_every_capacity_is_multiplied_and_nothing_else(path: Path, loop: str, scale: float) -> None:
    """Capacities (the defaults' too) x scale, per-request costs / scale, the rest unchanged."""
    base = effective(system_of(path, loop))
    scaled = effective(scale_system(system_of(path, loop), scale))
    assert set(scaled.dependencies) == set(base.dependencies)
    pairs = [(base.dependencies[n], scaled.dependencies[n]) for n in base.dependencies]
    pairs.append((base.shared_dependency, scaled.shared_dependency))
    for before, after in pairs:
        for field in dataclasses.fields(before):
            old, new = getattr(before, field.name), getattr(after, field.name)
            if field.name in DEPENDENCY_CAPACITIES:
                assert new == int(old * scale + 0.5), (field.name, old, new)
            else:
                assert new == old, field.name
    for field in dataclasses.fields(SystemSettings):
        old, new = getattr(base, field.name), getattr(scaled, field.name)
        if field.name in SYSTEM_CAPACITIES:
            assert new == pytest.approx(old * scale, abs=0.5), field.name
        elif field.name in PER_REQUEST_COSTS:
            assert new == pytest.approx(old / scale), field.name
        elif field.name not in ("dependencies", "shared_dependency"):
            assert new == old, field.name


def test_a_scaled_dependency_is_a_bigger_one() -> None:
    """The capacity that bounds the retry storm grows, its service time and timeout do not."""
    path = ROOT / "experiments" / "retry-storm.yaml"
    base = effective(system_of(path)).dependencies["recommendations"]
    scaled = effective(scale_system(system_of(path), "5")).dependencies["recommendations"]
    assert scaled.concurrency == 5 * base.concurrency > base.concurrency
    assert scaled.queue_limit == 5 * base.queue_limit
    assert (scaled.service_time_ms, scaled.call_timeout_ms, scaled.hang_ms) == (
        base.service_time_ms,
        base.call_timeout_ms,
        base.hang_ms,
    )


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_scale_one_changes_nothing(path: Path) -> None:
    arguments = control_arguments(path, "chaosemergence.controls.traffic")
    assert scale_system(system_of(path), 1) == system_of(path)
    users, rate, load = arguments["users"], arguments["spawn_rate"], arguments.get("load")
    assert scale_traffic(users, rate, load, "1") == (users, rate, load or {})


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_traffic_grows_with_the_same_ramp_and_user_base_per_user(path: Path) -> None:
    arguments = control_arguments(path, "chaosemergence.controls.traffic")
    users = arguments["users"]
    load = arguments.get("load") or {}
    new_users, new_rate, new_load = scale_traffic(users, arguments["spawn_rate"], load, 10)
    assert new_users == 10 * users
    assert new_rate == pytest.approx(10 * arguments["spawn_rate"])
    assert new_users / new_rate == pytest.approx(users / arguments["spawn_rate"])  # ramp time
    population = load.get("population", DEFAULT_POPULATION)
    assert new_load["population"] == 10 * population
    assert {k: v for k, v in new_load.items() if k != "population"} == {
        k: v for k, v in load.items() if k != "population"
    }


@pytest.mark.parametrize("bad", [0.5, 0, 21, "ten", "", None, True, float("nan"), [5]])
def test_a_scale_outside_1_to_20_is_refused_naming_scale(bad: object) -> None:
    with pytest.raises(ValueError, match=r"scale must be a number in \[1, 20\]"):
        parse_scale(bad)
    with pytest.raises(ValueError, match="scale"):
        scale_system({}, bad)
    with pytest.raises(ValueError, match="scale"):
        scale_traffic(10, 5, None, bad)


def test_scale_is_read_from_text_as_a_var_gives_it() -> None:
    assert parse_scale(" 7.5 ") == 7.5 and parse_scale(20) == 20.0 and parse_scale("1") == 1.0


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_takes_scale_in_both_controls(path: Path) -> None:
    """`scale: 1` in the configuration, `${scale}` in the system's and the traffic's control."""
    experiment = yaml.safe_load(path.read_text())
    assert experiment["configuration"]["scale"] == 1
    for module in ("reference_system", "traffic"):
        arguments = control_arguments(path, f"chaosemergence.controls.{module}")
        assert arguments["scale"] == "${scale}", module
