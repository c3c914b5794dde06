"""`prime_cache` in the traffic control: every user's profile is computed once before the
first Locust user, against a real reference system, so a cold start cannot be a trigger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import InterruptExecution

from chaosemergence.controls import traffic
from tests.conftest import RunningSystem, free_port


def _cells(system: RunningSystem) -> list[dict[str, Any]]:
    state = system.admin("GET", "/admin/state").json()
    return [cell["state"] for cell in state["cells"]]


def test_priming_computes_every_profile_once_and_warms_the_cache(
    clean_system: RunningSystem,
) -> None:
    before = _cells(clean_system)
    population = 24
    assert traffic.prime_profiles(clean_system.url, population) == population
    after = _cells(clean_system)
    computed = sum(
        a["coalescing"]["computations"] - b["coalescing"]["computations"]
        for a, b in zip(after, before, strict=True)
    )
    assert computed == population  # one computation per user, none repeated
    # Read again: every one a cache hit.
    hits_before = sum(c["cache"]["hits"] for c in after)
    assert traffic.prime_profiles(clean_system.url, population) == population
    hits = sum(c["cache"]["hits"] for c in _cells(clean_system)) - hits_before
    assert hits == population


def test_priming_that_reaches_nobody_fails_the_run() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InterruptExecution, match="read only 0 of 3"):
        traffic.prime_profiles(nobody, 3, budget=10)


def test_prime_cache_must_be_a_boolean(tmp_path: Path) -> None:
    configuration = {
        "emergence_url": f"http://127.0.0.1:{free_port()}",
        "emergence_state_dir": str(tmp_path),
    }
    with pytest.raises(InterruptExecution, match="prime_cache must be true or false"):
        traffic.before_experiment_control({}, configuration=configuration, prime_cache="yes")
