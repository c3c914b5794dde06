"""How much load Locust itself generates: one process, and a master with 2 local workers.

Locust is started through the traffic control (chaosemergence.traffic: the runner the
experiments use, distributed mode included), with no wait between requests and one path
for every user (``TrafficSpec.path``), against:

- the bare ASGI hello-world (chaosemergence/bench/hello.py): the anchor, what Locust sends
  when the server costs almost nothing (Locust's own figure is about 12-13k requests per
  second per process on a trivial endpoint; a machine whose cores are shared sends less);
- the gateway's cheapest endpoint, ``/health`` (no cell is asked).

Locust, the server and the workers share this machine's cores, so the figures say how much
load *this machine* can put on the system; traffic from other hosts (the workers given by
address: docs/scaling.md) is how to go past it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from chaosemergence.bench.record import Record
from chaosemergence.bench.service import hello_world, reference_system
from chaosemergence.traffic.runner import TrafficError, TrafficSpec, start_traffic

__all__ = ["USERS", "loadgen_section", "locust_rps"]

SECTION = "loadgen"
USERS = 64


def locust_rps(url: str, path: str, workers: int, seconds: float, state: Path) -> float | None:
    """Locust's successful requests per second at ``url + path`` (None: it did not run)."""
    spec = TrafficSpec(
        target_url=url,
        users=USERS,
        spawn_rate=float(USERS),
        duration=seconds,
        workers=workers,
        wait_min=0.0,
        wait_max=0.0,
        request_timeout=5.0,
        path=path,
    )
    try:
        run = start_traffic(spec, state, ready_timeout=60.0)
    except TrafficError as error:
        print(f"loadgen: {error}", flush=True)
        return None
    run.wait(timeout=seconds + 60.0)
    summary = run.stop()
    if summary is None or summary.requests == 0:
        return None
    return summary.rps * (1.0 - summary.failure_ratio)


def loadgen_section(
    record: Record, *, seconds: float, progress: Callable[[str], None] = lambda _: None
) -> None:
    """Measure Locust's rate against the hello-world and the gateway's /health."""
    with tempfile.TemporaryDirectory(prefix="chaosemergence-loadgen-") as tmp:
        workdir = Path(tmp)
        progress("loadgen: Locust against the bare ASGI hello-world")
        with hello_world(workdir) as hello:
            one = locust_rps(hello, "/", 0, seconds, workdir / "locust-hello-1")
            two = locust_rps(hello, "/", 2, seconds, workdir / "locust-hello-2")
        record.add(SECTION, "locust_hello_rps_1proc", one, "req/s")
        record.add(
            SECTION,
            "locust_hello_rps_2workers",
            two,
            "req/s",
            anchor=f"{SECTION}/locust_hello_rps_1proc",
        )
        progress("loadgen: Locust against the gateway's /health")
        with reference_system(workdir) as system:
            one = locust_rps(system.url, "/health", 0, seconds, workdir / "locust-gw-1")
            two = locust_rps(system.url, "/health", 2, seconds, workdir / "locust-gw-2")
        record.add(
            SECTION,
            "locust_gateway_health_rps_1proc",
            one,
            "req/s",
            anchor=f"{SECTION}/locust_hello_rps_1proc",
        )
        record.add(
            SECTION,
            "locust_gateway_health_rps_2workers",
            two,
            "req/s",
            anchor=f"{SECTION}/locust_gateway_health_rps_1proc",
        )
