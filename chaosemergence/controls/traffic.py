"""Control: run Locust traffic from before the steady-state hypothesis until after the rollbacks.

    controls:
      - name: traffic
        provider:
          type: python
          module: chaosemergence.controls.traffic
          arguments: {users: 40, spawn_rate: 20, duration: 600, warmup: 10}

Locust runs as subprocesses (never imported here: it monkey-patches with gevent), bounded
by `duration`, and is stopped by pid after the rollbacks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaosemergence.settings import ExtensionSettings, traffic_state_dir
from chaosemergence.traffic.runner import TrafficError, TrafficSpec, start_traffic, stop_traffic

__all__ = [
    "after_experiment_control",
    "after_rollback_control",
    "before_experiment_control",
    "cleanup_control",
]

logger = logging.getLogger("chaostoolkit")

# The state directory of the traffic this control started (None when none).
_running: Path | None = None


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
    **kwargs: Any,
) -> None:
    """Start Locust against `emergence_url`, then wait `warmup` seconds for steady state.

    `load` passes further TrafficSpec fields: population, hot_keys, hot_share, wait_min,
    wait_max, sync_period, spike_multiplier, spike_fraction, seed.
    """
    global _running
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    state_dir = traffic_state_dir(settings)
    try:
        spec = TrafficSpec(
            target_url=settings.emergence_url,
            users=users,
            spawn_rate=spawn_rate,
            duration=duration,
            shape=shape,
            workers=workers,
            **(load or {}),
        )
        stop_traffic(state_dir)  # a run left behind by a killed `chaos` process
        start_traffic(spec, state_dir)
    except (TypeError, ValueError, TrafficError) as error:
        raise InterruptExecution(f"traffic control: {error}") from None
    _running = state_dir
    logger.info(
        "traffic: %d users (%s) against %s; warming up %ss",
        users,
        shape,
        settings.emergence_url,
        warmup,
    )
    time.sleep(float(warmup))


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
    """Stop the traffic if it is still running (no rollbacks, or an aborted run)."""
    cleanup_control()


def cleanup_control() -> None:
    """Stop the Locust processes this control started (idempotent)."""
    global _running
    if _running is not None:
        summary = stop_traffic(_running)
        if summary is not None:
            logger.info("traffic summary: %s", summary)
        _running = None
