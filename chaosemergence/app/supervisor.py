"""Starts, watches, kills and restarts the cell processes of one reference system.

Each cell gets a listening socket bound here (127.0.0.1, an ephemeral port) and inherits
it by file descriptor, so a restarted cell comes back on the same port with no race.
Cells also watch their parent and exit when it dies: no orphans even after a SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.settings import SystemSettings

__all__ = ["CellProcess", "Supervisor"]


@dataclass
class CellProcess:
    """One cell: its socket (kept for restarts) and its current process, if any."""

    index: int
    sock: socket.socket
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    killed_at: float | None = field(default=None)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Owns the cell processes of one gateway."""

    def __init__(self, settings: SystemSettings, token: str, run_dir: Path) -> None:
        self.settings = settings
        self._token = token
        self.run_dir = run_dir
        self.cells: list[CellProcess] = []
        self._settings_file = run_dir / "settings.json"

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._settings_file.write_text(json.dumps(self.settings.to_json()))
        for index in range(self.settings.cells):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            sock.set_inheritable(True)
            self.cells.append(CellProcess(index, sock))
        for cell in self.cells:
            self._spawn(cell)
        self.wait_ready(timeout=60.0)

    def _spawn(self, cell: CellProcess) -> None:
        env = {**os.environ, TOKEN_ENV: self._token}
        log = open(self.run_dir / f"cell-{cell.index}.log", "ab")  # noqa: SIM115 - owned by the child
        cell.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaosemergence.app.cell_main",
                "--index",
                str(cell.index),
                "--fd",
                str(cell.sock.fileno()),
                "--settings",
                str(self._settings_file),
                "--db",
                str(self.run_dir / f"cell-{cell.index}.sqlite3"),
                "--parent",
                str(os.getpid()),
            ],
            pass_fds=(cell.sock.fileno(),),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        cell.killed_at = None

    def wait_ready(self, timeout: float, cells: list[CellProcess] | None = None) -> None:
        """Block until every given cell answers /health; RuntimeError names the laggards."""
        pending = list(cells or self.cells)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while pending and time.monotonic() < deadline:
                for cell in list(pending):
                    if cell.process is not None and cell.process.poll() is not None:
                        raise RuntimeError(
                            f"cell {cell.index} exited with {cell.process.returncode}; "
                            f"see {self.run_dir / f'cell-{cell.index}.log'}"
                        )
                    try:
                        if client.get(f"{cell.url}/health").status_code == 200:
                            pending.remove(cell)
                    except httpx.HTTPError:
                        pass
                if pending:
                    time.sleep(0.1)
        if pending:
            names = ", ".join(str(c.index) for c in pending)
            raise RuntimeError(f"cells {names} not ready within {timeout:.0f} s")

    def kill(self, index: int) -> bool:
        """SIGKILL one cell (a crash, not a shutdown); False when it was already dead."""
        cell = self.cells[index]
        if not cell.alive or cell.process is None:
            return False
        cell.process.send_signal(signal.SIGKILL)
        cell.process.wait(timeout=10)
        cell.killed_at = time.time()
        return True

    def restart_dead(self) -> list[int]:
        """Start every cell whose process is gone; returns their indexes (once ready)."""
        dead = [cell for cell in self.cells if not cell.alive]
        for cell in dead:
            cell.restarts += 1
            self._spawn(cell)
        if dead:
            self.wait_ready(timeout=30.0, cells=dead)
        return [cell.index for cell in dead]

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate every cell (SIGTERM, then SIGKILL after `timeout`) and close the sockets."""
        for cell in self.cells:
            if cell.alive and cell.process is not None:
                cell.process.terminate()
        deadline = time.monotonic() + timeout
        for cell in self.cells:
            if cell.process is None:
                continue
            try:
                cell.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                cell.process.kill()
                cell.process.wait(timeout=5)
        for cell in self.cells:
            cell.sock.close()
