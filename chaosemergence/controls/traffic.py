"""Control: run Locust traffic from before the steady-state hypothesis until after the rollbacks.

    controls:
      - name: traffic
        provider:
          type: python
          module: chaosemergence.controls.traffic
          arguments: {users: 40, spawn_rate: 20, duration: 600, warmup: 10}

Against your own service, with your own locustfile:

          arguments: {locustfile: ./locustfile.py, host: "https://shop.staging.example",
                      allow_remote: true, users: 50, duration: 900, workers: 2}

Locust runs as subprocesses (never imported here: it monkey-patches with gevent), bounded
by `duration`, and is stopped by pid after the rollbacks. Its summary and the path of its
HTML report go into the journal (`extensions`, name `chaosemergence-traffic`); `html_report`
copies the report where you want it. A host that is not loopback needs `allow_remote: true`;
`workers > 0` runs Locust's own master and that many local workers.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaosemergence.scaling import parse_scale, scale_traffic
from chaosemergence.settings import EXPERIMENT_START_KEY, ExtensionSettings, traffic_state_dir
from chaosemergence.traffic.runner import (
    HTML_REPORT,
    TrafficError,
    TrafficSpec,
    start_traffic,
    stop_traffic,
)

__all__ = [
    "after_experiment_control",
    "after_rollback_control",
    "before_experiment_control",
    "cleanup_control",
]

logger = logging.getLogger("chaostoolkit")

EXTENSION_NAME = "chaosemergence-traffic"

# The state directory of the traffic this control started (None when none).
_running: Path | None = None
# Where to copy Locust's HTML report when the traffic stops (None: leave it in the state dir).
_report_copy: Path | None = None
# What the last traffic did, for the journal: summary, report, target.
_outcome: dict[str, Any] | None = None


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    users: int = 40,
    spawn_rate: float = 20,
    duration: float = 600,
    shape: str = "steady",
    workers: int = 0,
    warmup: float = 10,
    load: dict[str, Any] | None = None,
    locustfile: str | None = None,
    host: str | None = None,
    allow_remote: bool = False,
    html_report: str | None = None,
    scale: Any = 1,
    prime_cache: bool = False,
    **kwargs: Any,
) -> None:
    """Start Locust against `host` (default `emergence_url`), then wait `warmup` seconds.

    `prime_cache: true` first reads every user's profile once, one request at a time (a
    cache warmed before the service takes traffic, as a deploy does): the steady state is
    then warm from the first user, so a cold start cannot be a trigger of its own.

    `locustfile` runs your own locustfile instead of the built-in one (its users and tasks;
    `users`, `spawn_rate`, `duration` and `workers` still apply). A `host` that is not
    loopback needs `allow_remote: true`. `html_report` is where to copy Locust's HTML report
    when the traffic stops. `load` passes further TrafficSpec fields to the built-in
    locustfile: population, hot_keys, hot_share, wait_min, wait_max, sync_period,
    spike_multiplier, spike_fraction, seed. `scale` (1 to 20, default 1) multiplies
    `users`, `spawn_rate` and the user base (`population`), as the reference-system control
    multiplies the system's capacities (chaosemergence.scaling).
    """
    global _running, _report_copy, _outcome
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    state_dir = traffic_state_dir(settings)
    target = str(host).rstrip("/") if host else settings.emergence_url
    if configuration is not None and EXPERIMENT_START_KEY not in configuration:
        # For the probes that look back to the experiment's start (check_defense_activation).
        configuration[EXPERIMENT_START_KEY] = time.time()
    try:
        if not isinstance(prime_cache, bool):
            raise ValueError(f"prime_cache must be true or false, got {prime_cache!r}")
        users, spawn_rate, load = scale_traffic(users, spawn_rate, load, scale)
        spec = TrafficSpec(
            target_url=target,
            users=users,
            spawn_rate=spawn_rate,
            duration=duration,
            shape=shape,
            workers=workers,
            locustfile=locustfile,
            allow_remote=allow_remote,
            **load,
        )
        stop_traffic(state_dir)  # a run left behind by a killed `chaos` process
        if prime_cache:
            prime_profiles(target, spec.population)
        start_traffic(spec, state_dir)
    except (TypeError, ValueError, TrafficError) as error:
        raise InterruptExecution(f"traffic control: {error}") from None
    _running = state_dir
    _report_copy = Path(html_report) if html_report else None
    _outcome = {
        "name": EXTENSION_NAME,
        "target": target,
        "locustfile": locustfile,
        "scale": parse_scale(scale),
        "users": spec.users,
    }
    logger.info(
        "traffic: %d users (%s, scale %g) against %s; warming up %ss",
        spec.users,
        locustfile or shape,
        _outcome["scale"],
        target,
        warmup,
    )
    time.sleep(float(warmup))


PRIME_TIMEOUT_SECONDS = 5.0  # one profile read
PRIME_BUDGET_SECONDS = 120.0  # the whole priming pass, at most


def prime_profiles(target: str, population: int, budget: float = PRIME_BUDGET_SECONDS) -> int:
    """Read the profile of users 1..`population` once each; how many answered 200.

    One at a time, so priming never queues on a capacity-limited dependency; bounded by
    `budget` seconds. Fails the run (InterruptExecution) when fewer than half answered:
    a steady state that is not warm is not the one the experiment means.
    """
    deadline = time.monotonic() + budget
    ok = 0
    with httpx.Client(timeout=PRIME_TIMEOUT_SECONDS) as client:
        for user in range(1, population + 1):
            if time.monotonic() > deadline:
                break
            try:
                ok += client.get(f"{target}/users/{user}/profile").status_code == 200
            except httpx.HTTPError:
                continue
    logger.info("traffic: cache primed, %d of %d profiles read", ok, population)
    if ok * 2 < population:
        raise InterruptExecution(
            f"traffic control: priming the cache read only {ok} of {population} profiles"
        )
    return ok


def after_rollback_control(
    context: Experiment,
    state: Any,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Stop the traffic once the rollbacks have run."""
    cleanup_control()


def after_experiment_control(
    context: Experiment,
    state: Journal,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Stop the traffic if it is still running, and put its summary and report in the journal."""
    global _outcome
    cleanup_control()
    if _outcome is not None and isinstance(state, dict):
        state.setdefault("extensions", []).append(_outcome)
        _outcome = None


def cleanup_control() -> None:
    """Stop the Locust processes this control started (idempotent)."""
    global _running
    if _running is not None:
        summary = stop_traffic(_running)
        if summary is not None:
            logger.info("traffic summary: %s", summary)
        report = _running / HTML_REPORT
        if report.is_file() and _report_copy is not None:
            _report_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report, _report_copy)
            report = _report_copy
        if _outcome is not None:
            _outcome["summary"] = summary.as_dict() if summary is not None else None
            _outcome["html_report"] = str(report.resolve()) if report.is_file() else None
        _running = None
