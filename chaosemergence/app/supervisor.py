"""Starts, watches, kills and restarts the cell processes of one reference system.

Each cell gets a listening socket bound here (127.0.0.1, an ephemeral port) and inherits
it by file descriptor, so a restarted cell comes back on the same port with no race, and
connections made while it restarts wait in the socket's backlog instead of failing.
Cells also watch their parent and exit when it dies: no orphans even after a SIGKILL.

``reap()`` (called by the gateway's monitor a few times a second) notices cells that
exited: a cell that asked for a graceful restart (exit code ``RESTART_EXIT_CODE``) is
started again at once; any other death (SIGKILL, OOM, crash) leaves the cell dead until
``restart_dead()`` (``/admin/reset``, ``/admin/cells/restart``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.lifecycle import RESTART_EXIT_CODE, events_file, exit_marker
from chaosemergence.app.settings import SystemSettings

__all__ = ["CellExit", "CellProcess", "Supervisor"]


@dataclass(frozen=True)
class CellExit:
    """How a cell process ended."""

    cell: int
    code: int
    reason: str  # predictive_restart | oom_killed | killed | crashed | stopped
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.cell, "code": self.code, "reason": self.reason, "at": self.at}


@dataclass
class CellProcess:
    """One cell: its socket (kept for restarts) and its current process, if any."""

    index: int
    sock: socket.socket
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    planned_restarts: int = 0
    killed_at: float | None = field(default=None)
    last_exit: CellExit | None = None
    reaped: bool = False  # the current process's exit has been handled

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

    @property
    def restarting(self) -> bool:
        """Exited to be restarted: its socket keeps accepting into the backlog meanwhile."""
        return (
            self.process is not None
            and self.process.poll() == RESTART_EXIT_CODE
            and not self.reaped
        )

    @property
    def available(self) -> bool:
        """Worth sending a user request to: alive, or about to be back on the same socket."""
        return self.alive or self.restarting


class Supervisor:
    """Owns the cell processes of one gateway.

    ``desired`` holds the defense switches and jitter state the admin API last set, so a
    cell restarted on its own (predictive restart) comes back as it was told to be.
    """

    def __init__(self, settings: SystemSettings, token: str, run_dir: Path) -> None:
        self.settings = settings
        self._token = token
        self.run_dir = run_dir
        self.cells: list[CellProcess] = []
        self._settings_file = run_dir / "settings.json"
        # Guards spawning and reaping: the gateway's monitor (event loop) and admin calls
        # (worker threads) both start processes.
        self._lock = threading.RLock()
        self.desired_switches: dict[str, bool] = {}
        self.desired_jitter_removed = False

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._settings_file.write_text(json.dumps(self.settings.to_json()))
        for index in range(self.settings.cells):
            # A new system starts with no history from an earlier one on this port.
            for stale in (exit_marker(self.run_dir, index), events_file(self.run_dir, index)):
                stale.unlink(missing_ok=True)
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
        command = [
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
        ]
        if self.desired_switches:
            command += ["--switches", json.dumps(self.desired_switches)]
        if self.desired_jitter_removed:
            command.append("--jitter-removed")
        exit_marker(self.run_dir, cell.index).unlink(missing_ok=True)
        log = open(self.run_dir / f"cell-{cell.index}.log", "ab")  # noqa: SIM115 - owned by the child
        cell.process = subprocess.Popen(
            command,
            pass_fds=(cell.sock.fileno(),),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        cell.killed_at = None
        cell.reaped = False

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

    def _exit_reason(self, cell: CellProcess, code: int) -> str:
        if code == RESTART_EXIT_CODE:
            return "predictive_restart"
        marker = exit_marker(self.run_dir, cell.index)
        if marker.exists():
            with contextlib.suppress(OSError):
                marker.unlink()
            return "oom_killed"
        if cell.killed_at is not None:
            return "killed"
        return "stopped" if code == 0 else "crashed"

    def reap(self) -> list[CellExit]:
        """Handle cells that exited since the last call; restart those that asked for it."""
        exits = []
        with self._lock:
            for cell in self.cells:
                process = cell.process
                if process is None or cell.reaped or process.poll() is None:
                    continue
                cell.reaped = True
                code = process.returncode
                reason = self._exit_reason(cell, code)
                cell.last_exit = CellExit(cell.index, code, reason, time.time())
                exits.append(cell.last_exit)
                if code == RESTART_EXIT_CODE:
                    cell.restarts += 1
                    cell.planned_restarts += 1
                    self._spawn(cell)
        return exits

    def kill(self, index: int) -> bool:
        """SIGKILL one cell (a crash, not a shutdown); False when it was already dead."""
        cell = self.cells[index]
        if not cell.alive or cell.process is None:
            return False
        cell.killed_at = time.time()
        cell.process.send_signal(signal.SIGKILL)
        cell.process.wait(timeout=10)
        return True

    def restart_dead(self) -> list[int]:
        """Start every cell whose process is gone; returns their indexes (once ready)."""
        with self._lock:
            self.reap()  # a cell restarting on its own is not dead
            dead = [cell for cell in self.cells if not cell.alive]
            for cell in dead:
                if cell.process is not None and not cell.reaped:
                    cell.reaped = True
                cell.restarts += 1
                self._spawn(cell)
        if dead:
            self.wait_ready(timeout=30.0, cells=dead)
        return [cell.index for cell in dead]

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate every cell (SIGTERM, then SIGKILL after `timeout`) and close the sockets."""
        with self._lock:
            for cell in self.cells:
                cell.reaped = True  # nothing is restarted from here on
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
