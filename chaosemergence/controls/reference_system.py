"""Control: start the reference system before the experiment (if none answers), stop it after.

Declared at experiment level:

    controls:
      - name: reference-system
        provider:
          type: python
          module: chaosemergence.controls.reference_system
          arguments: {cells: 10}

It only ever stops what it started, and it records the experiment's start time in the
configuration (`emergence_experiment_started_at`) for `check_defense_activation`.

`loop: cut` (`--var loop=cut`) is the third verdict's control run: the experiment's trigger
stays, and `loop_cut` (settings overrides of the same shape as `system`, merged over it)
cuts the feedback loop the experiment is about, so the harm must disappear.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
from chaoslib.exceptions import InterruptExecution
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaosemergence.activity import parse_switch
from chaosemergence.app.switches import ALL_DEFENSES
from chaosemergence.client import AdminClient
from chaosemergence.extras import MissingExtraError, require
from chaosemergence.lease import keep_lease, release_lease
from chaosemergence.scaling import parse_scale, scale_system
from chaosemergence.settings import (
    BASELINE_KEY,
    BASELINE_WINDOW_KEY,
    EXPERIMENT_START_KEY,
    METHOD_START_KEY,
    ExtensionSettings,
)

__all__ = [
    "after_experiment_control",
    "before_experiment_control",
    "before_method_control",
    "cleanup_control",
]

logger = logging.getLogger("chaostoolkit")
BASELINE_WINDOW = 30.0
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0

# The process this control started in this `chaos` process (None when it started nothing).
_started: subprocess.Popen[bytes] | None = None


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


LOOP_MODES = ("on", "cut")


def merge_overrides(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged over it, mappings merged key by key (settings overrides)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def system_overrides(
    system: dict[str, Any] | None, loop: str, loop_cut: dict[str, Any] | None
) -> dict[str, Any]:
    """The settings overrides to start with: `system`, plus `loop_cut` when `loop` is "cut"."""
    if loop not in LOOP_MODES:
        raise InterruptExecution(f"loop must be one of {', '.join(LOOP_MODES)}, got {loop!r}")
    for name, value in (("system", system), ("loop_cut", loop_cut)):
        if value is not None and not isinstance(value, dict):
            raise InterruptExecution(f"{name} must be a mapping of settings, got {value!r}")
    if loop == "cut" and not loop_cut:
        raise InterruptExecution("loop is 'cut' but the control has no loop_cut overrides")
    overrides = dict(system or {})
    return merge_overrides(overrides, loop_cut or {}) if loop == "cut" else overrides


def start_reference_system(
    settings: ExtensionSettings, cells: int, seed: int, system: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """Start `chaosemergence serve` for `settings.emergence_url` and wait until it answers.

    `system` holds settings overrides (capacities, service times...), passed as --config.
    """
    try:
        require("reference", "the reference_system control")
    except MissingExtraError as error:
        raise InterruptExecution(str(error)) from None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / f"serve-{settings.port}.log"
    command = [
        sys.executable, "-m", "chaosemergence.cli", "serve",
        "--cells", str(cells), "--port", str(settings.port),
        "--state-dir", str(settings.state_dir), "--seed", str(seed),
    ]  # fmt: skip
    if system:
        overrides = settings.state_dir / f"system-{settings.port}.json"
        overrides.write_text(json.dumps(system))
        command += ["--config", str(overrides)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={k: v for k, v in os.environ.items()},
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InterruptExecution(
                f"the reference system exited with {process.returncode} at start; see {log_path}"
            )
        if _answers(settings.emergence_url):
            return process
        time.sleep(0.2)
    stop_process(process)
    raise InterruptExecution(
        f"the reference system did not answer at {settings.emergence_url} within "
        f"{READY_TIMEOUT:.0f} s; see {log_path}"
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful: the gateway stops its cells), SIGKILL the group after a timeout."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    cells: int = 10,
    seed: int = 7,
    defenses: str | bool = "on",
    system: dict[str, Any] | None = None,
    keep_on: list[str] | None = None,
    loop: str = "on",
    loop_cut: dict[str, Any] | None = None,
    scale: Any = 1,
    **kwargs: Any,
) -> None:
    """Start the reference system unless one already answers, then switch defenses on or off.

    `defenses` is "on" (default) or "off": "off" is the negative control, where the same
    experiment must deviate. `keep_on` names defenses that stay on in the negative control
    because they are not the ones under test (e.g. `cellular_routing` for a pattern that
    lives inside each cell, where failover onto a cell that escaped would hide it).
    `loop` is "on" (default) or "cut": "cut" starts the system with `loop_cut` merged over
    `system`, so it needs to start the system itself. `scale` (1 to 20, default 1)
    multiplies every capacity of the system it starts (chaosemergence.scaling); the
    traffic control multiplies the users by the same `scale`.
    """
    global _started
    enabled = parse_switch("defenses", defenses)
    overrides = system_overrides(system, str(loop).strip().lower(), loop_cut)
    try:
        factor = parse_scale(scale)
        overrides = scale_system(overrides, factor)
    except ValueError as error:
        raise InterruptExecution(f"reference-system control: {error}") from None
    cut = str(loop).strip().lower() == "cut"
    if keep_on is not None and (
        not isinstance(keep_on, list) or not all(n in ALL_DEFENSES for n in keep_on)
    ):
        raise InterruptExecution(
            f"keep_on must be a list of defense names ({', '.join(ALL_DEFENSES)}), got {keep_on!r}"
        )
    if configuration is not None:
        configuration[EXPERIMENT_START_KEY] = time.time()
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    if _answers(settings.emergence_url):
        if cut:
            raise InterruptExecution(
                f"loop=cut changes the system's settings at start, but a reference system "
                f"already answers at {settings.emergence_url}: stop it or use another port"
            )
        if factor != 1:
            raise InterruptExecution(
                f"scale {factor:g} multiplies the system's capacities at start, but a reference "
                f"system already answers at {settings.emergence_url}: stop it or use another port"
            )
        logger.info("reference system already answers at %s: using it", settings.emergence_url)
    else:
        logger.info(
            "starting the reference system (%d cells, capacities x%g) at %s",
            cells,
            factor,
            settings.emergence_url,
        )
        _started = start_reference_system(settings, int(cells), int(seed), overrides)
        if cut:
            logger.info("feedback loop cut (loop=cut): %s", json.dumps(loop_cut))
    admin = AdminClient(settings)
    lease = settings.lease_seconds
    answer = admin.post(
        "/admin/defenses",
        what="switch defenses",
        json={"enabled": enabled, "names": None, "lease_seconds": lease},
    )
    if not enabled and keep_on:
        answer = admin.post(
            "/admin/defenses",
            what="keep defenses on (keep_on)",
            json={"enabled": True, "names": keep_on, "lease_seconds": lease},
        )
    if (answer.get("lease") or {}).get("held"):
        # Defenses off: renewed while this run lives, restored by the system if it dies.
        keep_lease(settings)
    kept = f", except {', '.join(keep_on)}" if not enabled and keep_on else ""
    logger.info("defenses %s%s", "on" if enabled else "off (negative control)", kept)


def before_method_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    baseline_window: float = BASELINE_WINDOW,
    **kwargs: Any,
) -> None:
    """Remember when the method starts and what the system looked like just before it.

    Probes that compare with steady state (e.g. `latency_growth`) read this baseline.
    """
    if configuration is None:
        return
    configuration[METHOD_START_KEY] = time.time()
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/increase", what="record the baseline", params={"seconds": baseline_window}
    )
    configuration[BASELINE_KEY] = answer["samples"]
    configuration[BASELINE_WINDOW_KEY] = float(baseline_window)


def after_experiment_control(
    context: Experiment,
    state: Journal,
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    """Stop the reference system if this control started it."""
    cleanup_control()


def cleanup_control() -> None:
    """Stop what this control started (idempotent; also runs when the run is interrupted)."""
    global _started
    release_lease()
    if _started is not None:
        logger.info("stopping the reference system (pid %d)", _started.pid)
        stop_process(_started)
        _started = None
