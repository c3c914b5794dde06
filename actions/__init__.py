"""Chaos Toolkit actions: inject faults and switch defenses through the admin API."""

from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Configuration, Secrets

from chaosemergence.activity import check_cells, check_names, check_number, parse_switch
from chaosemergence.client import AdminClient
from chaosemergence.settings import ExtensionSettings, traffic_state_dir
from chaosemergence.traffic.runner import TrafficError, TrafficSpec
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
    "start_traffic",
    "stop_traffic",
]

MAX_DURATION = 24 * 3600


def _inject(
    kind: str,
    percentage: float,
    duration: float,
    cells: list[int] | None,
    dependency: str,
    configuration: Configuration,
    secrets: Secrets,
    latency_ms: float = 0.0,
) -> dict[str, Any]:
    body = {
        "kind": kind,
        "percentage": check_number("percentage", percentage, 0, 100, low_open=True),
        "duration": check_number("duration", duration, 0, MAX_DURATION, low_open=True),
        "cells": check_cells(cells),
        "dependency": dependency,
        "latency_ms": latency_ms,
    }
    fault: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/faults", what=f"inject {kind} fault", json=body
    )
    return {"id": fault["id"], "expires_at": fault["expires_at"], "cells": fault["cells"]}


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
    latency = check_number("latency_ms", latency_ms, 0, 60_000, low_open=True)
    return _inject(
        "latency", percentage, duration, cells, dependency, configuration, secrets, latency
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
    """Drop every cell's cache at once (the trigger of a thundering herd)."""
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/cache/invalidate", what="invalidate caches"
    )
    cells = answer["cells"]
    return {
        "removed": sum(c.get("removed", 0) for c in cells.values()),
        "prewarmed": sum(c.get("prewarmed", 0) for c in cells.values()),
    }


def _jitter(enabled: bool, configuration: Configuration, secrets: Secrets) -> dict[str, Any]:
    what = "restore jitter" if enabled else "remove jitter"
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/jitter", what=what, json={"enabled": enabled}
    )
    return {"cells": len(answer["cells"]), "jitter": enabled}


def remove_all_jitter(
    configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Remove the jitter from every periodic timer and retry backoff (the cells fall in step)."""
    return _jitter(False, configuration, secrets)


def restore_jitter(configuration: Configuration = None, secrets: Secrets = None) -> dict[str, Any]:
    """Put the jitter back on every periodic timer and retry backoff."""
    return _jitter(True, configuration, secrets)


def kill_cell(
    cell: int, configuration: Configuration = None, secrets: Secrets = None
) -> dict[str, Any]:
    """Kill one cell's process (SIGKILL): its users get 503, the other cells are untouched."""
    index = int(check_number("cell", cell, 0, 63))
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
    index = int(check_number("cell", cell, 0, 63))
    body = {
        "megabytes_per_second": check_number(
            "megabytes_per_second", megabytes_per_second, 0, 1024, low_open=True
        ),
        "duration": check_number("duration", duration, 0, MAX_DURATION, low_open=True),
    }
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
    answer: dict[str, Any] = AdminClient.from_chaos(configuration, secrets).post(
        "/admin/defenses",
        what="switch defenses " + ("on" if enabled else "off"),
        json={"enabled": switch, "names": check_names(names)},
    )
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
    configuration: Configuration = None,
    secrets: Secrets = None,
) -> dict[str, Any]:
    """Start Locust traffic against `emergence_url` (subprocesses; `workers` > 0: distributed).

    Shapes: steady, spike, synchronized (every user fires in lockstep). The run stops by
    itself after `duration` seconds; `stop_traffic` stops it earlier. `run` names an extra
    run beside the traffic control's own (e.g. "spike"); `population` is how many distinct
    users the traffic draws from, `hot_share` the share of requests for its hottest users.
    """
    settings = ExtensionSettings.from_chaos(configuration, secrets)
    try:
        spec = TrafficSpec(
            target_url=settings.emergence_url,
            users=users,
            spawn_rate=spawn_rate,
            duration=duration,
            shape=shape,
            workers=workers,
            population=population,
            hot_share=hot_share,
        )
        state_dir = traffic_state_dir(settings, run)
        _stop_locust(state_dir)  # a run left behind by a killed `chaos` process
        started = _start_locust(spec, state_dir)
    except (TypeError, ValueError, TrafficError) as error:
        raise ActivityFailed(f"start_traffic against {settings.emergence_url}: {error}") from None
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
