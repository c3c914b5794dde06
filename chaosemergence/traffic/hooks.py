"""Locust event hooks every run loads: the hard deadline and the ready signal.

The built-in locustfile imports this module; a user's own locustfile runs with it as a second
locustfile (``-f theirs.py,hooks.py``), so their run is bounded and watched the same way.
It defines no User class. Never import it yourself outside Locust (gevent monkey-patching).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import gevent
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from chaosemergence.traffic.profiles import LoadConfig

# A run started under a background job of a shell inherits SIGINT ignored (POSIX shells
# ignore it for asynchronous commands), and Python then installs no KeyboardInterrupt
# handler: stop_traffic's graceful SIGINT would do nothing, and the final stats and HTML
# report would be lost to the SIGTERM that follows. Take SIGINT back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


_CONFIG = LoadConfig.from_env()
_log = logging.getLogger("chaosemergence.traffic")


@events.init.add_listener
def _arm_deadline(environment: Environment, **_kwargs: object) -> None:
    """Quit at the hard deadline the runner set, even if nobody ever stops this run."""
    deadline = _CONFIG.deadline
    if deadline is None:
        return

    def expire() -> None:
        # gevent timers run on the loop's cached clock, which can lag the wall clock by the
        # time the process spent importing: re-arm until the deadline has really passed.
        if time.time() < deadline:
            gevent.spawn_later(deadline - time.time(), expire)
            return
        _log.error("hard deadline %.0f reached, quitting", deadline)
        gevent.spawn_later(10, os._exit, 3)
        # What SIGINT does (stop_traffic's graceful stop: final stats are written), minus the
        # traceback a signal caught in this greenlet would log: interrupt the main greenlet.
        gevent.get_hub().parent.throw(KeyboardInterrupt())

    gevent.spawn_later(max(0.0, deadline - time.time()), expire)


@events.test_start.add_listener
def _signal_ready(environment: Environment, **_kwargs: object) -> None:
    """Tell the runner the test has started (users are spawning) by creating the ready file."""
    if _CONFIG.ready_file and not isinstance(environment.runner, WorkerRunner):
        Path(_CONFIG.ready_file).write_text(f"{time.time()}\n")
