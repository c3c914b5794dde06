"""How the reference system grows with its cells: cold start, memory, requests per second.

For each size in SIZES (1, 4, 10 and 32 cells) one `chaosemergence serve` is started with
BENCH_SETTINGS on a free loopback port and measured:

- ``cold_start_s_c{N}``: from starting the process until the gateway's /health answers 200
  (the gateway answers only once every cell has answered its own /health);
- ``rss_mb_per_cell_c{N}``: the cells' resident memory (psutil), averaged over the cells,
  and ``gateway_rss_mb_c{N}``;
- ``max_rps_c{N}``: wrk through the gateway on the cache-hit path (users 0-199, 32
  connections, ``seconds`` long, after a one-second warm-up filling the caches).

Each figure of a size has the one-cell figure as its anchor, so the ratio is the growth
factor. ``largest_cells`` is the largest size that started and answered; a size that fails
to start (or answers nothing) stops the section there, and the error says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from chaosemergence.bench.record import Record
from chaosemergence.bench.service import (
    BENCH_SETTINGS,
    USERS,
    _free_port,
    _stop,
    _wait_healthy,
)
from chaosemergence.bench.wrk import run_wrk

__all__ = ["SIZES", "scale_section"]

SIZES = (1, 4, 10, 32)
SECTION = "scale"
CONNECTIONS = 32


def _rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


def measure_size(cells: int, workdir: Path, seconds: float) -> tuple[float, float, float, float]:
    """(cold start s, mean RSS MB per cell, gateway RSS MB, goodput req/s) of one size."""
    port = _free_port()
    config = workdir / "bench-settings.json"
    config.write_text(json.dumps(BENCH_SETTINGS))
    log = workdir / f"serve-{cells}.log"
    command = [
        sys.executable,
        "-m",
        "chaosemergence.cli",
        "serve",
        f"--cells={cells}",
        f"--port={port}",
        f"--state-dir={workdir / f'state-{cells}'}",
        f"--config={config}",
    ]
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"{url}/health", process, log)
        cold = time.perf_counter() - started
        gateway = psutil.Process(process.pid)
        children = [
            c for c in gateway.children() if "chaosemergence.app.cell_main" in " ".join(c.cmdline())
        ]
        if len(children) != cells:
            raise RuntimeError(f"expected {cells} cell processes, found {len(children)}")
        run_wrk(url, connections=8, seconds=1, path="/profile", users=USERS)
        result = run_wrk(
            url, connections=CONNECTIONS, seconds=seconds, path="/profile", users=USERS
        )
        # Memory after the load: what a cell holds once it has served (caches filled).
        per_cell = sum(_rss_mb(c) for c in children) / cells
        return cold, per_cell, _rss_mb(gateway), result.goodput
    finally:
        _stop(process)


def scale_section(
    record: Record,
    *,
    seconds: float,
    sizes: Sequence[int] = SIZES,
    progress: Callable[[str], None] = lambda _: None,
) -> None:
    """Measure every size into ``record``; stop at the first size that fails."""
    base = sizes[0]
    largest = 0
    with tempfile.TemporaryDirectory(prefix="chaosemergence-scale-") as tmp:
        for cells in sizes:
            progress(f"scale: {cells} cells")
            try:
                cold, per_cell, gateway, rps = measure_size(cells, Path(tmp), seconds)
            except (RuntimeError, OSError, subprocess.SubprocessError, psutil.Error) as error:
                print(f"scale: {cells} cells failed, stopping: {error}", file=sys.stderr)
                break
            if rps <= 0:
                print(f"scale: {cells} cells answered nothing, stopping", file=sys.stderr)
                break
            largest = cells
            record.add(
                SECTION,
                f"cold_start_s_c{cells}",
                cold,
                "s",
                anchor=None if cells == base else f"{SECTION}/cold_start_s_c{base}",
            )
            record.add(
                SECTION,
                f"rss_mb_per_cell_c{cells}",
                per_cell,
                "MB",
                anchor=None if cells == base else f"{SECTION}/rss_mb_per_cell_c{base}",
            )
            record.add(
                SECTION,
                f"gateway_rss_mb_c{cells}",
                gateway,
                "MB",
                anchor=None if cells == base else f"{SECTION}/gateway_rss_mb_c{base}",
            )
            record.add(
                SECTION,
                f"max_rps_c{cells}",
                rps,
                "req/s",
                anchor=None if cells == base else f"{SECTION}/max_rps_c{base}",
            )
    record.add(SECTION, "largest_cells", float(largest), "cells", goal=f"value >= {max(sizes)}")
