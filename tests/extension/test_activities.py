"""Every activity against a real running reference system (no mocked HTTP)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from chaoslib.exceptions import ActivityFailed, InterruptExecution

from chaosemergence import actions, probes, rollbacks
from chaosemergence.controls import reference_system
from tests.conftest import RunningSystem, free_port
from tests.e2e.chaosrun import ROOT


def _faults(system: RunningSystem) -> list[list[dict[str, object]]]:
    cells = system.admin("GET", "/admin/state").json()["cells"]
    return [c["state"]["faults"] for c in cells if c["state"]]


def test_inject_timeouts_returns_id_and_expiry(clean_system: RunningSystem) -> None:
    """inject_timeouts puts a timeout fault in every cell and returns its id and expiry."""
    before = time.time()
    fault = actions.inject_timeouts(20, 60, configuration=clean_system.configuration)
    assert fault["id"].startswith("fault-")
    assert before + 59 <= fault["expires_at"] <= time.time() + 61
    assert fault["cells"] == list(range(clean_system.cells))
    assert all(
        f[0]["kind"] == "timeout" and f[0]["percentage"] == 20 for f in _faults(clean_system)
    )


def test_percentage_150_is_rejected_before_anything_is_injected(
    clean_system: RunningSystem,
) -> None:
    """A percentage of 150 raises ActivityFailed naming `percentage`; no cell gets a fault."""
    with pytest.raises(ActivityFailed, match="percentage"):
        actions.inject_timeouts(150, 60, configuration=clean_system.configuration)
    assert all(f == [] for f in _faults(clean_system))


def test_wrong_token_is_a_clear_401(clean_system: RunningSystem) -> None:
    """A wrong admin token fails the activity with the 401 spelled out."""
    with pytest.raises(ActivityFailed, match="401"):
        actions.inject_timeouts(
            10,
            10,
            configuration=clean_system.configuration,
            secrets={"emergence": {"admin_token": "wrong"}},
        )


def test_unreachable_gateway_fails_fast_naming_the_url() -> None:
    """An unreachable gateway raises ActivityFailed naming the URL, within the timeout."""
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=url):
        actions.invalidate_cache_globally(
            configuration={"emergence_url": url, "emergence_timeout": 2},
            secrets={"emergence": {"admin_token": "x"}},
        )
    assert time.monotonic() - started < 5


def test_reset_all_defenses_is_idempotent(clean_system: RunningSystem) -> None:
    """reset_all_defenses clears faults and switches, and is harmless when run twice."""
    config = clean_system.configuration
    actions.inject_errors(50, 60, configuration=config)
    actions.set_defenses("off", ["circuit_breaker"], configuration=config)
    actions.remove_all_jitter(configuration=config)
    first = rollbacks.reset_all_defenses(configuration=config)
    second = rollbacks.reset_all_defenses(configuration=config)
    assert first["faults_cleared"] == clean_system.cells and second["faults_cleared"] == 0
    state = clean_system.admin("GET", "/admin/state").json()["cells"]
    assert all(all(c["state"]["defenses"].values()) for c in state)
    assert not any(c["state"]["jitter_removed"] for c in state)


def test_failure_radius_measures_a_dead_cell(clean_system: RunningSystem) -> None:
    """With one of three cells killed, about a third of user requests fail, and only that cell's."""
    config = clean_system.configuration
    actions.kill_cell(2, configuration=config)
    with httpx.Client(timeout=5) as client:
        for i in range(150):
            client.get(f"{clean_system.url}/users/r{i}/recommendations")
    radius = probes.measure_failure_radius(window=10, configuration=config)
    by_cell = probes.failure_radius_by_cell(window=10, configuration=config)
    assert 15 <= radius <= 55
    assert by_cell["2"] == 100.0 and by_cell["0"] == 0.0 and by_cell["1"] == 0.0


def test_latency_percentile_from_the_services_own_histogram(clean_system: RunningSystem) -> None:
    """p99 from the embedded path grows when latency is injected."""
    config = clean_system.configuration
    actions.set_defenses(False, configuration=config)
    actions.inject_latency(400, 100, 30, dependency="recommendations", configuration=config)
    with httpx.Client(timeout=10) as client:
        for i in range(20):
            client.get(f"{clean_system.url}/users/l{i}/recommendations")
    p99 = probes.latency_percentile(0.99, window=15, min_requests=5, configuration=config)
    p50 = probes.latency_percentile(0.5, window=15, min_requests=5, configuration=config)
    assert p99 >= 400 and p50 >= 250


def test_windowed_probes_fail_when_they_cannot_measure(clean_system: RunningSystem) -> None:
    """A window without enough requests fails the probe instead of passing with a zero."""
    config = clean_system.configuration
    for probe in (
        probes.measure_failure_radius,
        probes.latency_percentile,
        probes.goodput,
        probes.retry_amplification,
        probes.emergence_figures,
    ):
        with pytest.raises(ActivityFailed, match="min_requests=1000000"):
            probe(window=5, min_requests=1_000_000, configuration=config)
    with pytest.raises(ActivityFailed, match="min_misses"):
        probes.coalescing_ratio(window=5, min_misses=1_000_000, configuration=config)
    with pytest.raises(ActivityFailed, match="cache lookup"):
        probes.cache_hit_rate(window=5, min_requests=1_000_000, configuration=config)


def test_defense_activation_after_a_cache_invalidation(clean_system: RunningSystem) -> None:
    """Invalidating warm caches prewarms hot keys: cache_prewarming activates, a breaker did not."""
    config = clean_system.configuration
    since = time.time()
    with httpx.Client(timeout=5) as client:
        for i in range(30):
            client.get(f"{clean_system.url}/users/h{i % 10}/profile")
    result = actions.invalidate_cache_globally(configuration=config)
    assert result["removed"] >= 10 and result["prewarming"] >= 10
    assert probes.check_defense_activation(["cache_prewarming"], since=since, configuration=config)
    with pytest.raises(ActivityFailed, match="circuit_breaker did not activate"):
        probes.check_defense_activation(
            ["cache_prewarming", "circuit_breaker"], since=since, configuration=config
        )


def test_bad_defense_name_is_rejected(clean_system: RunningSystem) -> None:
    """set_defenses with an unknown name fails naming `names` and changes nothing."""
    with pytest.raises(ActivityFailed, match="names"):
        actions.set_defenses(
            False, ["circuit_breaker", "nonsense"], configuration=clean_system.configuration
        )
    state = clean_system.admin("GET", "/admin/state").json()["cells"]
    assert all(c["state"]["defenses"]["circuit_breaker"] for c in state)


def test_retry_amplification_counts_retries(clean_system: RunningSystem) -> None:
    """With errors on every call and naive retries, each request costs several attempts."""
    config = clean_system.configuration
    actions.set_defenses(False, configuration=config)
    actions.inject_errors(100, 30, dependency="recommendations", configuration=config)
    with httpx.Client(timeout=5) as client:
        for i in range(20):
            client.get(f"{clean_system.url}/users/x{i}/recommendations")
    assert probes.retry_amplification(window=10, configuration=config) >= 3.0


def test_discover_lists_every_activity() -> None:
    """`chaos discover --no-install` lists the activities with docstrings and typed arguments."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaostoolkit",
            "--no-version-check",
            "discover",
            "--no-install",
            "--no-system-info",
            "--discovery-path",
            "/dev/stdout",
            "chaostoolkit-emergence",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    text = out.stdout
    discovery = json.loads(text[text.index("{") : text.rindex("}") + 1])
    names = {(a["mod"], a["name"]): a for a in discovery["activities"]}
    # Every function an experiment calls (method, hypothesis or rollback) is discovered with
    # its docstring, so `chaos discover` shows a user what the shipped experiments use.
    called = set()
    for path in (ROOT / "experiments").glob("*.yaml"):
        experiment = yaml.safe_load(path.read_text())
        activities = [
            *experiment["steady-state-hypothesis"]["probes"],
            *experiment["method"],
            *experiment.get("rollbacks", []),
        ]
        called |= {(a["provider"]["module"], a["provider"]["func"]) for a in activities}
    assert called
    for module, func in sorted(called):
        assert (module, func) in names, f"{module}.{func} is not exported (missing in __all__?)"
        assert names[(module, func)]["doc"], f"{module}.{func} has no docstring"
    assert names[("chaosemergence.actions", "inject_timeouts")]["doc"]
    timeouts = names[("chaosemergence.actions", "inject_timeouts")]
    percentage = next(a for a in timeouts["arguments"] if a["name"] == "percentage")
    assert percentage == {"name": "percentage", "default": 20, "type": "number"}


def test_pattern_probes_read_the_live_system(clean_system: RunningSystem) -> None:
    """The pattern probes return plain numbers and booleans from the real services."""
    config = clean_system.configuration
    with httpx.Client(timeout=5) as client:
        for i in range(30):
            client.get(f"{clean_system.url}/users/z{i % 5}/profile")
    assert 0.0 < probes.cache_hit_rate(window=10, configuration=config) <= 1.0
    assert probes.goodput(window=10, configuration=config) > 0
    assert probes.metastable_state(configuration=config) is False
    assert isinstance(probes.service_correlation(window=10, configuration=config), float)
    figures = probes.emergence_figures(window=10, configuration=config)
    assert 0.0 <= figures["failure_radius_pct"] <= 100.0 and figures["p99_ms"] > 0
    assert probes.cells_down(configuration=config) == 0
    actions.kill_cell(1, configuration=config)
    assert probes.cells_down(configuration=config) == 1


def test_memory_pressure_input_is_checked_before_anything_happens(
    clean_system: RunningSystem,
) -> None:
    """A negative leak rate or an unknown cell is refused naming the argument."""
    with pytest.raises(ActivityFailed, match="megabytes_per_second"):
        actions.apply_memory_pressure(0, -5, 10, configuration=clean_system.configuration)
    with pytest.raises(ActivityFailed, match="cell"):
        actions.apply_memory_pressure(99, 5, 10, configuration=clean_system.configuration)
    answer = actions.apply_memory_pressure(0, 1, 2, configuration=clean_system.configuration)
    assert answer["cell"] == 0 and answer["limit_bytes"] > 0


def test_negative_control_keeps_the_named_defenses_on(clean_system: RunningSystem) -> None:
    """defenses=off with keep_on: everything off except what keep_on names."""
    config = dict(clean_system.configuration)
    reference_system.before_experiment_control(
        {}, configuration=config, defenses="off", keep_on=["cellular_routing"]
    )
    state = clean_system.admin("GET", "/admin/state").json()
    assert state["gateway"]["cellular_routing"] is True
    assert not any(any(c["state"]["defenses"].values()) for c in state["cells"])
    reference_system.before_experiment_control({}, configuration=config, defenses="off")
    assert clean_system.admin("GET", "/admin/state").json()["gateway"]["cellular_routing"] is False


def test_unknown_keep_on_name_stops_before_anything_is_switched(
    clean_system: RunningSystem,
) -> None:
    config = dict(clean_system.configuration)
    with pytest.raises(InterruptExecution, match="keep_on must be a list of defense names"):
        reference_system.before_experiment_control(
            {}, configuration=config, defenses="off", keep_on=["cellular_rooting"]
        )
    state = clean_system.admin("GET", "/admin/state").json()
    assert state["gateway"]["cellular_routing"] is True
    assert all(all(c["state"]["defenses"].values()) for c in state["cells"])
