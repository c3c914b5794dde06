"""Chaos Toolkit actions: inject faults and switch defenses through the admin API."""

import logging
import time
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosemergence.activity import (
    check_cell,
    check_cells,
    check_names,
    check_number,
    numeric,
    parse_switch,
    refused_as_activity,
)
from chaosemergence.client import AdminClient
from chaosemergence.contract import check_fault, check_pressure
from chaosemergence.lease import keep_lease
from chaosemergence.measure import samples_total
from chaosemergence.settings import (
    BASELINE_KEY,
    BASELINE_WINDOW_KEY,
    ExtensionSettings,
    traffic_state_dir,
)
from chaosemergence.sizing import plan_spike
from chaosemergence.traffic.runner import MAX_DURATION_S as MAX_SPIKE_SECONDS
from chaosemergence.traffic.runner import MAX_USERS as MAX_SPIKE_USERS
from chaosemergence.traffic.runner import TrafficError, TrafficSpec, traffic_status
from chaosemergence.traffic.runner import start_traffic as _start_locust
from chaosemergence.traffic.runner import stop_traffic as _stop_locust

__all__ = [
    "apply_memory_pressure",
    "inject_errors",
    "inject_latency",
    "inject_timeouts",
    "invalidate_cache_globally",
    "kill_cell",
    "remove_all_jitter",
    "restore_jitter",
    "set_defenses",
    "start_spike_over_capacity",
    "start_traffic",
    "stop_traffic",
]

logger = logging.getLogger("chaostoolkit")
# What a capacity-sized spike copies from the steady-state traffic, so that its users offer
# what the baseline users did (the per-user rate it is sized with).
SPIKE_COPIED_FIELDS = ("population", "hot_keys", "hot_share", "wait_min", "wait_max")


def _inject(
    kind: str,
    percentage: float,
    duration: float,
    cells: list[int] | None,
    dependency: str,
    configuration: Configuration,
    secrets: Secrets,
    latency_ms: Any = 0.0,
) -> dict[str, Any]:
    fault = {
        "kind": kind,
        "percentage": numeric(percentage),
        "duration": numeric(duration),
        "dependency": dependency,
        "latency_ms": numeric(latency_ms),
    }
    # The service's own check (the contract's), but for the dependency's name: the service
    # knows its dependencies, the activity does not.
    known = [dependency] if isinstance(dependency, str) else []
    with refused_as_activity():
        body: dict[str, Any] = {**check_fault(fault, known), "cells": check_cells(cells)}
    added: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/faults", what=f"inject {kind} fault", json=body
    )
    return {"id": added["id"], "expires_at": added["expires_at"], "cells": added["cells"]}


def inject_timeouts(
    percentage: float = 20,
    duration: float = 300,
    cells: list[int] | None = None,
    dependency: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Make a percentage of dependency calls time out (their answer is lost) for `duration` s.

    Returns the fault's id, its expiry (epoch seconds) and the cells it was applied to.
    The reference system removes the fault by itself at expiry.
    """
    return _inject("timeout", percentage, duration, cells, dependency, configuration, secrets)


def inject_latency(
    latency_ms: float,
    percentage: float = 100,
    duration: float = 300,
    cells: list[int] | None = None,
    dependency: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Add `latency_ms` to a percentage of dependency calls (holding the server's worker)."""
    return _inject(
        "latency", percentage, duration, cells, dependency, configuration, secrets, latency_ms
    )


def inject_errors(
    percentage: float,
    duration: float = 300,
    cells: list[int] | None = None,
    dependency: str = "all",
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Make a percentage of dependency calls fail at once with an error for `duration` s."""
    return _inject("error", percentage, duration, cells, dependency, configuration, secrets)


def invalidate_cache_globally(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Drop every cell's cache at once (the trigger of a thundering herd).

    Fails when a live cell did not confirm: a trigger nobody saw applied proves nothing.
    ``prewarming`` counts hot keys whose recomputation started in the background (the
    reference system), ``prewarmed`` those an embedded service's callbacks already refilled.
    """
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/cache/invalidate", what="invalidate caches"
    )
    cells = answer["cells"]
    # A cell that is down has no cache to drop; any other error leaves its cache unknown.
    unconfirmed = {
        index: cell.get("errors") or cell["error"]
        for index, cell in cells.items()
        if cell.get("errors") or cell.get("error") not in (None, "cell is down")
    }
    if unconfirmed:
        raise ActivityFailed(f"invalidate_cache_globally: cells did not confirm: {unconfirmed}")
    return {
        "removed": sum(c.get("removed", 0) for c in cells.values()),
        "prewarming": sum(c.get("prewarming", 0) for c in cells.values()),
        "prewarmed": sum(c.get("prewarmed", 0) for c in cells.values()),
    }


def _jitter(enabled: bool, configuration: Configuration, secrets: Secrets) -> dict[str, Any]:
    what = "restore jitter" if enabled else "remove jitter"
    client = AdminClient.from_chaos(configuration, secrets)
    answer: dict[str, Any] = client.post(
        "/admin/jitter",
        what=what,
        json={"enabled": enabled, "lease_seconds": client.settings.lease_seconds},
    )
    _keep_lease_if_held(client, answer)
    return {"cells": len(answer["cells"]), "jitter": enabled}


def _keep_lease_if_held(client: AdminClient, answer: dict[str, Any]) -> None:
    """Something is weakened: renew its lease while this process runs (docs/trust.md)."""
    if (answer.get("lease") or {}).get("held"):
        keep_lease(client.settings)


def remove_all_jitter(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Remove the jitter from every periodic timer and retry delay (the fault).

    It aligns nothing by itself: every timer keeps its own phase. Cells fall in step only
    when a common event (an outage of the dependency they share) makes them retry together.
    """
    return _jitter(False, configuration, secrets)


def restore_jitter(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Put the jitter back on every periodic timer and retry backoff."""
    return _jitter(True, configuration, secrets)


def kill_cell(
    cell: int, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Kill one cell's process (SIGKILL): its users get 503, the other cells are untouched."""
    index = check_cell(cell)
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        f"/admin/cells/{index}/kill", what=f"kill cell {index}"
    )
    return answer


def apply_memory_pressure(
    cell: int,
    megabytes_per_second: float = 20,
    duration: float = 60,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Make one cell allocate memory at a steady rate for `duration` s (a leak).

    The cell never grows past its configured memory limit: with its defenses off it dies
    there (like an OOM kill); with them on, its guardrails shed and it is restarted first.
    """
    index = check_cell(cell)
    with refused_as_activity():
        rate, seconds = check_pressure(
            {"megabytes_per_second": numeric(megabytes_per_second), "duration": numeric(duration)}
        )
    body = {"megabytes_per_second": rate, "duration": seconds}
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        f"/admin/cells/{index}/memory-pressure",
        what=f"apply memory pressure to cell {index}",
        json=body,
    )
    return answer


def set_defenses(
    enabled: bool | str,
    names: list[str] | None = None,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Switch the named defenses (all of them when `names` is null) on or off."""
    switch = parse_switch("enabled", enabled)
    client = AdminClient.from_chaos(configuration, secrets)
    answer: dict[str, Any] = client.post(
        "/admin/defenses",
        what="switch defenses " + ("on" if switch else "off"),
        json={
            "enabled": switch,
            "names": check_names(names),
            "lease_seconds": client.settings.lease_seconds,
        },
    )
    _keep_lease_if_held(client, answer)
    return {"enabled": switch, "names": answer["names"]}


def start_traffic(
    users: int = 40,
    spawn_rate: float = 20,
    duration: float = 300,
    shape: str = "steady",
    workers: int = 0,
    run: str = "",
    population: int = 10_000,
    hot_share: float = 0.5,
    locustfile: str | None = None,
    host: str | None = None,
    allow_remote: bool = False,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start Locust traffic against `host` (default `emergence_url`; subprocesses; `workers` >
    0: Locust's own master and workers).

    Shapes: steady, spike, synchronized (every user fires in lockstep). The run stops by
    itself after `duration` seconds; `stop_traffic` stops it earlier. `run` names an extra
    run beside the traffic control's own (e.g. "spike"); `population` is how many distinct
    users the traffic draws from, `hot_share` the share of requests for its hottest users.
    `locustfile` runs your own locustfile instead of the built-in one; a `host` that is not
    loopback needs `allow_remote: true`.
    """
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    target = str(host).rstrip("/") if host else settings.emergence_url
    try:
        spec = TrafficSpec(
            target_url=target,
            users=users,
            spawn_rate=spawn_rate,
            duration=duration,
            shape=shape,
            workers=workers,
            population=population,
            hot_share=hot_share,
            locustfile=locustfile,
            allow_remote=allow_remote,
        )
        state_dir = traffic_state_dir(settings, run)
        _stop_locust(state_dir)  # a run left behind by a killed `chaos` process
        started = _start_locust(spec, state_dir)
    except (TypeError, ValueError, TrafficError) as error:
        raise ActivityFailed(f"start_traffic against {target}: {error}") from None
    return {
        "pids": started.pids,
        "users": users,
        "shape": shape,
        "workers": workers,
        "state_dir": str(state_dir),
    }


def stop_traffic(
    run: str = "", configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Stop Locust traffic started for `emergence_url` (the named `run`); returns its summary."""
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    try:
        summary = _stop_locust(traffic_state_dir(settings, run))
    except (ValueError, TrafficError) as error:
        raise ActivityFailed(f"stop_traffic: {error}") from None
    if summary is None:
        return {"running": False}
    return {
        "running": False,
        "requests": summary.requests,
        "failures": summary.failures,
        "rps": round(summary.rps, 2),
    }


# A spike's rate is read over this many seconds (the services keep one snapshot a second).
SPIKE_RATE_WINDOW = 3.0
SPIKE_POLL_SECONDS = 0.5


def _dependency_capacity(dependency: str, configuration: Configuration, secrets: Secrets) -> float:
    """Calls/s `dependency` can serve, summed over the live cells (their configuration)."""
    state = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/state", what=f"read {dependency}'s capacity"
    )
    capacity = 0.0
    for cell in state["cells"]:
        deps = (cell.get("state") or {}).get("dependencies") or {}
        if cell.get("alive") and dependency in deps:
            capacity += float(deps[dependency].get("capacity_per_second") or 0.0)
    if capacity <= 0:
        raise ActivityFailed(f"no live cell reports the capacity of a dependency {dependency!r}")
    return capacity


def _route_rate(route: str, configuration: Configuration, secrets: Secrets) -> float:
    answer = AdminClient.from_chaos(configuration, secrets).get(
        "/admin/increase", what="read the spike's rate", params={"seconds": SPIKE_RATE_WINDOW}
    )
    return samples_total(answer["samples"], "emergence_requests_total", route=route) / (
        SPIKE_RATE_WINDOW
    )


def start_spike_over_capacity(
    multiple: float = 3.0,
    dependency: str = "database",
    route: str = "profile",
    run: str = "spike",
    duration: float = 60,
    ramp_timeout: float = 20,
    reach: float = 0.9,
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start a load spike offering `multiple` x the capacity of `dependency`; return at its peak.

    Sized from measurements, not a fixed user count, so the trigger has the same margin on
    any machine: the capacity is what `dependency`'s workers can serve (concurrency / service
    time, summed over the live cells, from /admin/state); the rate one user offers is what
    the steady-state users sent on `route` (the requests that land on `dependency` once
    the cache is cold) in the baseline window the reference_system control recorded before
    the method. The spike's users behave like the baseline traffic's (same think time, mix
    and population; another seed), so `sizing.plan_spike` can extrapolate. It returns once
    `route` carries `reach` x the target over the last few seconds, with the plan and the
    rate reached; fails when it is not reached within `ramp_timeout` s (the trigger would
    prove nothing). `stop_traffic(run=...)` ends the spike (at the latest after `duration`).
    """
    factor = check_number("multiple", multiple, 1, 100)
    span = check_number("duration", duration, 0, MAX_SPIKE_SECONDS, low_open=True)
    patience = check_number("ramp_timeout", ramp_timeout, 0, 600, low_open=True)
    share = check_number("reach", reach, 0, 1, low_open=True)
    configuration = configuration or {}
    baseline = configuration.get(BASELINE_KEY)
    if not baseline:
        raise ActivityFailed(
            "start_spike_over_capacity needs the baseline window the reference_system control "
            "records before the method"
        )
    window = float(configuration.get(BASELINE_WINDOW_KEY) or 0) or 1.0
    baseline_rps = samples_total(baseline, "emergence_requests_total", route=route) / window
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    status = traffic_status(traffic_state_dir(settings))
    spec = status.get("spec")
    if not status["running"] or not spec:
        raise ActivityFailed(
            "start_spike_over_capacity sizes the spike from the running steady-state traffic "
            "(the traffic control's), and none is running"
        )
    capacity = _dependency_capacity(dependency, configuration, secrets)
    try:
        plan = plan_spike(factor, capacity, baseline_rps, int(spec["users"]), MAX_SPIKE_USERS)
        run_dir = traffic_state_dir(settings, run)
        copied = {k: spec[k] for k in SPIKE_COPIED_FIELDS if k in spec}
        spike = TrafficSpec(
            target_url=settings.emergence_url,
            users=plan.users,
            spawn_rate=float(plan.users),  # all of them within a second: a spike
            duration=span,
            shape="steady",
            seed=int(spec.get("seed", 42)) + 1,  # the baseline users' twins would mirror them
            **copied,
        )
        _stop_locust(run_dir)  # a run left behind by a killed `chaos` process
        _start_locust(spike, run_dir)
    except (TypeError, ValueError, TrafficError) as error:
        raise ActivityFailed(f"start_spike_over_capacity: {error}") from None
    logger.info(
        "spike: %d users on top of %d offer %.1f %s requests/s = %gx the %s's %.1f calls/s "
        "(a baseline user offered %.3f/s)",
        plan.users, plan.baseline_users, plan.target_rps, route, factor, dependency,
        capacity, plan.per_user_rps,
    )  # fmt: skip
    started = time.monotonic()
    best = 0.0
    while True:
        rate = _route_rate(route, configuration, secrets)
        best = max(best, rate)
        if rate >= share * plan.target_rps:
            break
        if time.monotonic() - started > patience:
            raise ActivityFailed(
                f"start_spike_over_capacity: the spike reached {best:.1f} {route} requests/s in "
                f"{patience:g} s, short of {share:g} x {plan.target_rps:.1f} (the {dependency}'s "
                f"capacity x {factor:g}): no overload to prove anything with"
            )
        time.sleep(SPIKE_POLL_SECONDS)
    return {
        **plan.as_dict(),
        "reached_rps": round(rate, 2),
        "reached_multiple": round(rate / capacity, 2),
        "seconds_to_peak": round(time.monotonic() - started, 1),
        "run": run,
    }
