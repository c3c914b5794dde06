"""Settings overrides from a YAML/JSON file: how experiments set capacities near saturation.

    dependencies:
      recommendations: {concurrency: 2, service_time_ms: 30, call_timeout_ms: 200}
    cache_ttl_seconds: 30

Unknown keys are refused with their name, so a typo cannot silently run the default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from chaosemergence.app.settings import DependencySettings, SystemSettings

__all__ = ["apply_overrides", "load_overrides"]

# Fields an experiment may not move: where the system listens and keeps its files.
_FIXED = {"host", "port", "state_dir", "cells", "seed", "cell_urls"}


def load_overrides(path: Path) -> dict[str, Any]:
    """The mapping in `path` (YAML or JSON); ValueError when it is not a mapping."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: settings overrides must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(settings: SystemSettings, overrides: dict[str, Any]) -> SystemSettings:
    """`settings` with `overrides` applied; ValueError naming any unknown or fixed field."""
    known = {f.name for f in dataclasses.fields(SystemSettings)} - _FIXED
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {', '.join(sorted(known))}")
    changes = {k: v for k, v in overrides.items() if k not in ("dependencies", "shared_dependency")}
    dep_fields = {f.name for f in dataclasses.fields(DependencySettings)}
    if "shared_dependency" in overrides:
        given_shared = overrides["shared_dependency"]
        if not isinstance(given_shared, dict):
            raise ValueError("shared_dependency must be a mapping of dependency settings")
        bad_shared = sorted(set(given_shared) - dep_fields)
        if bad_shared:
            raise ValueError(f"shared_dependency: unknown fields {bad_shared}")
        changes["shared_dependency"] = dataclasses.replace(
            settings.shared_dependency, **given_shared
        )
    if "dependencies" in overrides:
        deps = dict(settings.dependencies)
        given = overrides["dependencies"]
        if not isinstance(given, dict):
            raise ValueError("dependencies must be a mapping of dependency name to settings")
        for name, values in given.items():
            if name not in deps:
                raise ValueError(f"dependencies.{name}: unknown dependency; known: {sorted(deps)}")
            bad = sorted(set(values) - dep_fields)
            if bad:
                raise ValueError(f"dependencies.{name}: unknown fields {bad}")
            deps[name] = dataclasses.replace(deps[name], **values)
        changes["dependencies"] = deps
    return dataclasses.replace(settings, **changes)
