"""The profiles in .ci/profiles/: what they set is what the experiments read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
VARIABLE = re.compile(r"\$\{(\w+)\}")


def _profile(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / ".ci" / "profiles" / f"{name}.yaml").read_text())
    return data["configuration"]


def _experiments() -> dict[str, tuple[dict[str, Any], set[str]]]:
    """name -> (its configuration defaults, the variables it reads)."""
    found = {}
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        text = path.read_text()
        found[path.stem] = (yaml.safe_load(text)["configuration"], set(VARIABLE.findall(text)))
    return found


def test_every_variable_an_experiment_reads_has_a_default() -> None:
    """Each experiment runs without a var file: every ${var} it reads is in its configuration."""
    for name, (configuration, read) in _experiments().items():
        assert read <= set(configuration), (name, sorted(read - set(configuration)))


def test_the_weekly_profile_spells_out_the_experiments_defaults() -> None:
    """The experiments' defaults are the seed's values, the weekly profile's."""
    weekly = _profile("weekly")
    for name, (configuration, read) in _experiments().items():
        for key in read & set(weekly):
            assert configuration[key] == weekly[key], (name, key, configuration[key], weekly[key])


def test_every_profile_setting_is_read_by_an_experiment() -> None:
    """No profile sets a value no experiment reads (it would change nothing)."""
    read = set().union(*(r for _, r in _experiments().values()))
    for profile in ("ci", "weekly"):
        assert set(_profile(profile)) <= read, (profile, sorted(set(_profile(profile)) - read))
    assert set(_profile("ci")) == set(_profile("weekly"))
