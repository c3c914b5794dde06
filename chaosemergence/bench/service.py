"""What the defenses cost in a running service: wrk through the gateway and a cell.

One run starts, in turn, a bare ASGI hello-world and the reference system (gateway and
four cells) on loopback, each on the same server stack (uvicorn, uvloop, httptools), and
drives them with wrk for a bounded time:

- the cache-hit path (``GET /users/{id}/profile``, every profile cached) and the dependency
  path (``GET /users/{id}/recommendations``: a call to the simulated recommendations
  server through the cell's breaker, retries, budget and throttle), each with every
  defense on and every defense off, alternating, best of ``rounds``;
- one cell directly, on its own users' cache-hit path: what the gateway hop costs;
- the cache-hit path through the gateway at 1, 8, 32 and 128 connections: throughput
  should grow with concurrency until the CPU is full, never fall.

The system runs with capacities sized for the load (BENCH_SETTINGS): the experiments size
cells and dependencies to saturate at a few hundred requests per second, which would
measure the load shedder doing its job rather than what the defenses cost. Only 2xx
answers count (wrk's Non-2xx answers are subtracted).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from chaosemergence.app.routing import Routing
from chaosemergence.bench.record import Record
from chaosemergence.bench.wrk import WrkResult, run_wrk

__all__ = ["BENCH_SETTINGS", "service_section"]

CELLS = 4
USERS = [str(u) for u in range(200)]
CONNECTIONS = 32
SWEEP = (1, 8, 32, 128)
# Sized for the load: every profile stays cached for the whole run, the recommendations
# server takes 1 ms with room for every caller, and no cell counts itself over capacity.
BENCH_SETTINGS = {
    "cache_ttl_seconds": 3600.0,
    "cell_request_capacity": 1_000_000.0,
    "cell_user_capacity": 1_000_000.0,
    "cell_data_capacity_bytes": 1_000_000_000.0,
    "dependencies": {
        "recommendations": {
            "concurrency": 512,
            "queue_limit": 4096,
            "service_time_ms": 1.0,
            "call_timeout_ms": 1000.0,
        }
    },
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
SERVER_OPTIONS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited {process.returncode}: {log.read_text()[-500:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not healthy within {START_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (a graceful stop: the gateway stops its cells), then SIGKILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def _serving(command: list[str], health: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(health, process, log)
        yield
    finally:
        _stop(process)


@dataclass
class System:
    """A running reference system: its gateway URL, admin token and one cell's URL."""

    url: str
    token: str
    cell_url: str

    def defenses(self, enabled: bool) -> None:
        answer = httpx.post(
            f"{self.url}/admin/defenses",
            json={"enabled": enabled},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )
        answer.raise_for_status()


@contextlib.contextmanager
def reference_system(workdir: Path) -> Iterator[System]:
    """`chaosemergence serve` with BENCH_SETTINGS on a free loopback port."""
    port = _free_port()
    config = workdir / "bench-settings.json"
    config.write_text(json.dumps(BENCH_SETTINGS))
    state = workdir / "state"
    command = [
        sys.executable,
        "-m",
        "chaosemergence.cli",
        "serve",
        f"--cells={CELLS}",
        f"--port={port}",
        f"--state-dir={state}",
        f"--config={config}",
    ]
    url = f"http://127.0.0.1:{port}"
    with _serving(command, f"{url}/health", workdir / "system.log"):
        token = (state / f"admin-token-{port}").read_text().strip()
        cells = httpx.get(
            f"{url}/admin/state", headers={"Authorization": f"Bearer {token}"}, timeout=10.0
        ).json()["cells"]
        yield System(url, token, cells[0]["url"])


@contextlib.contextmanager
def hello_world(workdir: Path) -> Iterator[str]:
    """The bare ASGI hello-world on uvicorn with the gateway's server options."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "chaosemergence.bench.hello:app",
        "--host=127.0.0.1",
        f"--port={port}",
        "--log-level=warning",
        *SERVER_OPTIONS,
    ]
    url = f"http://127.0.0.1:{port}"
    with _serving(command, url, workdir / "hello.log"):
        yield url


def _best(runs: list[WrkResult]) -> WrkResult:
    return max(runs, key=lambda r: r.goodput)


def service_section(
    record: Record,
    *,
    seconds: float,
    rounds: int,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Measure the service figures into ``record`` (section "service" and "concurrency")."""
    section = "service"
    with tempfile.TemporaryDirectory(prefix="chaosemergence-bench-") as tmp:
        workdir = Path(tmp)
        progress("bare ASGI hello-world")
        with hello_world(workdir) as hello:
            bare = _best(
                [run_wrk(hello, connections=CONNECTIONS, seconds=seconds) for _ in range(rounds)]
            )
        record.add(section, "hello_world_rps", bare.goodput, "req/s")
        record.add(section, "hello_world_p99_ms", bare.p99_ms, "ms")

        progress("reference system: 4 cells")
        with reference_system(workdir) as system:
            home = Routing(CELLS)
            cell0 = [u for u in USERS if home.home(u) == 0]
            # Fill every cache (and the connection pools) before anything is measured.
            for path in ("/profile", "/recommendations"):
                run_wrk(system.url, connections=8, seconds=1, path=path, users=USERS)
            progress("one cell directly")
            direct = _best(
                [
                    run_wrk(
                        system.cell_url,
                        connections=CONNECTIONS,
                        seconds=seconds,
                        path="/profile",
                        users=cell0,
                    )
                    for _ in range(rounds)
                ]
            )
            # Each round: on, off, then the concurrency sweep (defenses on), so a burst of
            # load from elsewhere on the machine hits every figure alike; best round counts.
            runs: dict[tuple[str, bool], list[WrkResult]] = {}
            swept: dict[int, list[WrkResult]] = {}
            for round_ in range(1, rounds + 1):
                for enabled in (True, False):
                    progress(f"round {round_}: defenses {'on' if enabled else 'off'}")
                    system.defenses(enabled)
                    for path in ("/profile", "/recommendations"):
                        runs.setdefault((path, enabled), []).append(
                            run_wrk(
                                system.url,
                                connections=CONNECTIONS,
                                seconds=seconds,
                                path=path,
                                users=USERS,
                            )
                        )
                system.defenses(True)
                progress(
                    f"round {round_}: cache-hit path at {', '.join(map(str, SWEEP))} connections"
                )
                for connections in SWEEP:
                    swept.setdefault(connections, []).append(
                        run_wrk(
                            system.url,
                            connections=connections,
                            seconds=seconds,
                            path="/profile",
                            users=USERS,
                        )
                    )
            sweep = {connections: _best(results) for connections, results in swept.items()}

        record.add(
            section,
            "cell_direct_hit_rps",
            direct.goodput,
            "req/s",
            anchor=f"{section}/hello_world_rps",
        )
        record.add(section, "cell_direct_hit_p99_ms", direct.p99_ms, "ms")
        failed = 0
        for label, path in (("hit", "/profile"), ("dependency", "/recommendations")):
            off, on = _best(runs[(path, False)]), _best(runs[(path, True)])
            failed += sum(
                r.non_2xx + r.socket_errors for k in (True, False) for r in runs[(path, k)]
            )
            record.add(
                section,
                f"{label}_rps_off",
                off.goodput,
                "req/s",
                anchor=f"{section}/hello_world_rps",
            )
            record.add(
                section,
                f"{label}_rps_on",
                on.goodput,
                "req/s",
                anchor=f"{section}/{label}_rps_off",
                goal="ratio >= 0.9",
            )
            for stat in ("p50", "p99"):
                record.add(section, f"{label}_{stat}_ms_off", getattr(off, f"{stat}_ms"), "ms")
                record.add(
                    section,
                    f"{label}_{stat}_ms_on",
                    getattr(on, f"{stat}_ms"),
                    "ms",
                    anchor=f"{section}/{label}_{stat}_ms_off",
                )
        record.add(
            section,
            "gateway_vs_cell_direct",
            record.get(f"{section}/hit_rps_on").value,
            "req/s",
            anchor=f"{section}/cell_direct_hit_rps",
            goal="ratio >= 0.5",
        )
        record.add(section, "non_2xx_or_errors", float(failed), "answers")

        concurrency = "concurrency"
        for connections in SWEEP:
            result = sweep[connections]
            record.add(
                concurrency,
                f"hit_rps_c{connections}",
                result.goodput,
                "req/s",
                anchor=None if connections == SWEEP[0] else f"{concurrency}/hit_rps_c{SWEEP[0]}",
            )
            record.add(concurrency, f"hit_p99_ms_c{connections}", result.p99_ms, "ms")
        top = max(SWEEP)
        record.add(
            concurrency,
            f"hit_rps_c{top}_vs_peak",
            sweep[top].goodput,
            "req/s",
            anchor=f"{concurrency}/hit_rps_c{max(SWEEP, key=lambda c: sweep[c].goodput)}",
            goal="ratio >= 0.8",
        )
