"""Locustfile that drives the reference system's gateway: profile reads, payments, recommendations.

Never import this module yourself: importing locust monkey-patches the process with gevent.
``chaosemergence.traffic.runner`` starts it as ``python -m locust -f <this file>``.

Configuration comes from the environment (names in ``chaosemergence.traffic.profiles``):
``EMERGENCE_SHAPE`` (steady | spike | synchronized), ``EMERGENCE_SEED``,
``EMERGENCE_USERS_POPULATION``, ``EMERGENCE_HOT_KEYS``, ``EMERGENCE_HOT_SHARE``,
``EMERGENCE_WAIT_MIN`` / ``EMERGENCE_WAIT_MAX``, ``EMERGENCE_SYNC_PERIOD``,
``EMERGENCE_SPIKE_MULTIPLIER`` / ``EMERGENCE_SPIKE_FRACTION``, ``EMERGENCE_REQUEST_TIMEOUT``,
``EMERGENCE_CONFIG_READS`` (weight of reads of the shared configuration; 0: none),
``EMERGENCE_PATH`` (one path every user GETs instead of the mix; unset: the mix).
Users, spawn rate and run time are Locust's own ``-u``, ``-r`` and ``-t``: every shape reads
them (``use_common_options``), because with a shape class Locust itself only starts the
``--run-time`` clock after the shape has finished.

Only one LoadTestShape class exists in this module's namespace, the one ``EMERGENCE_SHAPE``
chose: Locust uses the first shape class it finds in a locustfile.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
import uuid

import gevent
from locust import FastHttpUser, LoadTestShape, task
from locust.runners import WorkerRunner

from chaosemergence.traffic import hooks  # noqa: F401  (the deadline and ready hooks)
from chaosemergence.traffic.profiles import (
    LoadConfig,
    hot_key_ids,
    pick_user_id,
    spike_user_count,
    sync_delay,
)

CONFIG = LoadConfig.from_env()
HOT_IDS = hot_key_ids(CONFIG.seed, CONFIG.population, CONFIG.hot_keys)
_USER_NUMBERS = itertools.count()
_log = logging.getLogger("chaosemergence.traffic")


class EmergenceUser(FastHttpUser):
    """A user of the reference system: mostly profile reads, some recommendations, few payments."""

    # Failures: any status >= 400 (so every 5xx), connection errors and timeouts; FastHttpUser
    # reports all of them as Locust failures. No load-generator retries: they would distort
    # retry-storm experiments.
    network_timeout = CONFIG.request_timeout
    connection_timeout = CONFIG.request_timeout
    max_retries = 0

    def on_start(self) -> None:
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) if isinstance(runner, WorkerRunner) else "local"
        self.rng = random.Random(f"{CONFIG.seed}/{worker}/{next(_USER_NUMBERS)}")
        self.load_headers = {"X-Emergence-Load": f"locust/{worker}"}
        if CONFIG.shape == "synchronized":
            # Even the first request waits for the shared wall-clock tick.
            gevent.sleep(sync_delay(time.time(), CONFIG.sync_period))

    def wait_time(self) -> float:
        if CONFIG.shape == "synchronized":
            return sync_delay(time.time(), CONFIG.sync_period)
        return self.rng.uniform(CONFIG.wait_min, max(CONFIG.wait_min, CONFIG.wait_max))

    def _any_user(self) -> int:
        return self.rng.randint(1, CONFIG.population)

    @task(6)
    def profile(self) -> None:
        user_id = pick_user_id(self.rng, CONFIG.population, HOT_IDS, CONFIG.hot_share)
        self.client.get(
            f"/users/{user_id}/profile", name="/users/[id]/profile", headers=self.load_headers
        )

    @task(1)
    def payment(self) -> None:
        body = {
            "amount_cents": self.rng.randint(100, 50_000),
            # A real uuid4, not one drawn from the seeded rng: two runs with the same seed must
            # not replay each other's idempotency keys against a persistent database.
            "idempotency_key": uuid.uuid4().hex,
        }
        self.client.post(
            f"/users/{self._any_user()}/payments",
            json=body,
            name="/users/[id]/payments",
            headers=self.load_headers,
        )

    @task(3)
    def recommendations(self) -> None:
        self.client.get(
            f"/users/{self._any_user()}/recommendations",
            name="/users/[id]/recommendations",
            headers=self.load_headers,
        )

    def config(self) -> None:
        """Read the configuration every cell shares (served by the gateway)."""
        self.client.get(
            f"/users/{self._any_user()}/config",
            name="/users/[id]/config",
            headers=self.load_headers,
        )

    # Only experiments that ask for configuration reads send any (EMERGENCE_CONFIG_READS).
    if CONFIG.config_reads > 0:
        config = task(CONFIG.config_reads)(config)


def _fixed_path(user: EmergenceUser) -> None:
    """GET EMERGENCE_PATH, nothing else: what Locust itself can send (`make bench`)."""
    user.client.get(CONFIG.path, headers=user.load_headers)


if CONFIG.path:
    EmergenceUser.tasks = [_fixed_path]


def _common_options(shape: LoadTestShape) -> tuple[int, float, float]:
    """Users, spawn rate and run time (seconds) from Locust's command line."""
    assert shape.runner is not None
    options = shape.runner.environment.parsed_options
    run_time = float(options.run_time) if options.run_time else float("inf")
    return int(options.num_users or 1), float(options.spawn_rate or 1), run_time


def _make_shape(config: LoadConfig) -> type[LoadTestShape]:
    """The one shape class ``config.shape`` selects; the others are never defined."""
    if config.shape == "spike":

        class SpikeShape(LoadTestShape):
            """Baseline users, a sudden spike to ``-u`` users in the middle, then baseline again."""

            use_common_options = True

            def tick(self) -> tuple[int, float] | None:
                peak, spawn_rate, run_time = _common_options(self)
                elapsed = self.get_run_time()
                count = spike_user_count(
                    elapsed, run_time, peak, config.spike_multiplier, config.spike_fraction
                )
                if count is None:
                    return None
                spike_start = run_time * (1 - config.spike_fraction) / 2
                # Ramp to the baseline at the requested rate; the spike itself (and its end)
                # happens within about a second, or it would not be a spike.
                rate = spawn_rate if elapsed < spike_start else max(spawn_rate, float(peak))
                return count, rate

        return SpikeShape

    class SteadyShape(LoadTestShape):
        """Ramp to ``-u`` users at ``-r`` per second and hold them until ``-t`` has passed."""

        use_common_options = True

        def tick(self) -> tuple[int, float] | None:
            users, spawn_rate, run_time = _common_options(self)
            if self.get_run_time() >= run_time:
                return None
            return users, spawn_rate

    # "synchronized" holds its users like "steady"; the lockstep is in EmergenceUser.wait_time.
    return SteadyShape


EmergenceShape = _make_shape(CONFIG)
