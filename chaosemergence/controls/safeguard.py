"""Control: abort the experiment when the failure radius breaches a blast-radius limit.

    controls:
      - name: safeguard
        provider:
          type: python
          module: chaosemergence.controls.safeguard
          arguments: {max_failure_radius: 50, window: 5}

A background thread reads the failure radius every `interval` seconds (0.5 by default, so
a breach is acted on within 2 s). On a breach it asks Chaos Toolkit to stop the run now
while keeping the rollbacks (SIGUSR1, `chaoslib.exit.exit_gracefully`); with
`runtime: {rollbacks: {strategy: always}}` the rollbacks then run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from chaoslib.exceptions import ActivityFailed, InvalidActivity
from chaoslib.exit import exit_gracefully
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaosemergence.activity import check_number

__all__ = [
    "after_experiment_control",
    "after_method_control",
    "before_method_control",
    "cleanup_control",
    "validate_control",
]

logger = logging.getLogger("chaostoolkit")


class _Guard:
    """The watching thread; `breach` holds what tripped it (None while all is well)."""

    def __init__(
        self,
        limit: float,
        window: float,
        interval: float,
        configuration: Configuration,
        secrets: Secrets,
    ) -> None:
        self.limit, self.window, self.interval = limit, window, interval
        self._configuration, self._secrets = configuration, secrets
        self._stop = threading.Event()
        self.breach: float | None = None
        self._thread = threading.Thread(target=self._watch, name="emergence-safeguard", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        from chaosemergence.probes import measure_failure_radius

        while not self._stop.wait(self.interval):
            try:
                radius = measure_failure_radius(
                    self.window, configuration=self._configuration, secrets=self._secrets
                )
            except ActivityFailed as error:
                logger.warning("safeguard could not read the failure radius: %s", error)
                continue
            if radius > self.limit:
                self.breach = radius
                logger.error(
                    "safeguard: failure radius %.1f%% over the last %ss exceeds %.1f%%: aborting",
                    radius,
                    self.window,
                    self.limit,
                )
                exit_gracefully()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# The guard of the running experiment (None outside of the method).
_guard: _Guard | None = None


def validate_control(control: dict[str, Any], **kwargs: Any) -> None:
    """`chaos validate` rejects a missing or out-of-range `max_failure_radius`."""
    arguments = control.get("provider", {}).get("arguments", {})
    try:
        check_number("max_failure_radius", arguments.get("max_failure_radius"), 0, 100)
        check_number("window", arguments.get("window", 5), 0, 900, low_open=True)
    except ActivityFailed as error:
        raise InvalidActivity(f"safeguard control: {error}") from None


def before_method_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    max_failure_radius: float = 50,
    window: float = 5,
    interval: float = 0.5,
    **kwargs: Any,
) -> None:
    """Start watching the failure radius when the method starts."""
    global _guard
    cleanup_control()
    limit = check_number("max_failure_radius", max_failure_radius, 0, 100)
    _guard = _Guard(
        limit,
        check_number("window", window, 0, 900, low_open=True),
        check_number("interval", interval, 0, 2, low_open=True),
        configuration,
        secrets,
    )
    _guard.start()
    logger.info("safeguard: aborting if more than %.1f%% of requests fail", limit)


def after_method_control(context: Experiment, state: Any = None, **kwargs: Any) -> None:
    """Stop watching once the method is over (the after-hypothesis judges from here)."""
    cleanup_control()


def after_experiment_control(context: Experiment, state: Journal, **kwargs: Any) -> None:
    """Record the breach, if any, in the journal's extensions."""
    cleanup_control()


def cleanup_control() -> None:
    """Stop the watching thread (idempotent)."""
    global _guard
    if _guard is not None:
        _guard.stop()
        _guard = None
