"""Starts, watches, kills and restarts the cell processes of one reference system.

Each cell gets a listening socket bound here (127.0.0.1, an ephemeral port) and inherits
it by file descriptor, so a restarted cell comes back on the same port with no race, and
connections made while it restarts wait in the socket's backlog instead of failing.
Cells also watch their parent and exit when it dies: no orphans even after a SIGKILL.

``reap()`` (called by the gateway's monitor a few times a second) notices cells that
exited: a cell that asked for a graceful restart (exit code ``RESTART_EXIT_CODE``) is
started again at once; any other death (SIGKILL, OOM, crash) leaves the cell dead until
``restart_dead()`` (``/admin/reset``, ``/admin/cells/restart``).

With ``settings.cell_urls`` the cells run elsewhere (``chaosemergence cell``, on this host
or others: docs/scaling.md): the supervisor starts no process, a thread asks each cell's
/health every ``REMOTE_HEALTH_SECONDS`` and a cell is alive while it answers. Such a cell
cannot be killed or restarted from here (``kill`` and ``restart_dead`` leave it alone):
whatever runs it on its host does that.

Faults injected into a cell outlive a restart of its process: the supervisor keeps each one
with its deadline (``keep_memory_pressure``, ``keep_fault``) until it expires or is cleared
(``forget_faults``), and a process started for that cell meanwhile (predictive restart,
restart of a dead cell) starts with what is left of it. A restart frees what a leak had
allocated, as it would in a real process, but the leak goes on: it is no cure.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.lifecycle import RESTART_EXIT_CODE, events_file, exit_marker
from chaosemergence.app.settings import SystemSettings

__all__ = ["REMOTE_HEALTH_SECONDS", "CellExit", "CellProcess", "StandingFault", "Supervisor"]

REMOTE_HEALTH_SECONDS = 0.5


@dataclass(frozen=True)
class CellExit:
    """How a cell process ended."""

    cell: int
    code: int
    reason: str  # predictive_restart | oom_killed | killed | crashed | stopped
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {"cell": self.cell, "code": self.code, "reason": self.reason, "at": self.at}


@dataclass(frozen=True)
class StandingFault:
    """A fault injected into some cells, kept until ``until`` (monotonic) or until cleared.

    ``request`` is the validated request the cells got (a dependency fault, or a memory
    pressure's ``megabytes_per_second``); a new process gets it with the duration left.
    """

    cells: tuple[int, ...]
    request: dict[str, Any]
    until: float

    def remaining(self, now: float) -> dict[str, Any] | None:
        """The request with what is left of its duration, or None once it has expired."""
        left = self.until - now
        return {**self.request, "duration": left} if left > 0 else None


@dataclass
class CellProcess:
    """One cell: its socket (kept for restarts) and its current process, if any."""

    index: int
    sock: socket.socket | None  # None: a cell that runs elsewhere (remote_url)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    planned_restarts: int = 0
    killed_at: float | None = field(default=None)
    last_exit: CellExit | None = None
    reaped: bool = False  # the current process's exit has been handled
    # A cell started by someone else at this address (settings.cell_urls), and whether it
    # answered its last health check (set by the supervisor's health thread).
    remote_url: str | None = None
    reachable: bool = False
    # The socket outlives every process of the cell, so its port and URL never change:
    # read once (the gateway needs the URL on every request; getsockname is a syscall).
    port: int = field(init=False)
    url: str = field(init=False)

    def __post_init__(self) -> None:
        if self.remote_url is not None:
            self.url = self.remote_url
            self.port = int(self.remote_url.rsplit(":", 1)[1])
            return
        assert self.sock is not None, "a local cell needs its socket"
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        if self.remote_url is not None:
            return self.reachable
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

    def __init__(
        self,
        settings: SystemSettings,
        token: str,
        run_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._token = token
        self.run_dir = run_dir
        self.cells: list[CellProcess] = []
        self._settings_file = run_dir / "settings.json"
        # Guards spawning and reaping: the gateway's monitor (event loop) and admin calls
        # (worker threads) both start processes.
        self._lock = threading.RLock()
        self.desired_switches: dict[str, bool] = {}
        self.desired_jitter_removed = False
        # Faults that outlive a restart (guarded by _lock): a cell's memory pressure, and
        # dependency faults by id.
        self._memory_pressure: dict[int, StandingFault] = {}
        self._faults: dict[str, StandingFault] = {}
        self._health_stop = threading.Event()
        self._health_thread: threading.Thread | None = None

    @property
    def remote(self) -> bool:
        """Whether the cells run elsewhere (settings.cell_urls) rather than as our children."""
        return bool(self.settings.cell_urls)

    # ------------------------------------------------------------ standing faults
    def keep_memory_pressure(
        self, index: int, megabytes_per_second: float, duration: float
    ) -> None:
        """Remember cell ``index``'s leak (it replaces any earlier one) for its restarts."""
        request = {"megabytes_per_second": megabytes_per_second}
        with self._lock:
            self._memory_pressure[index] = StandingFault(
                (index,), request, self._clock() + duration
            )

    def keep_fault(self, fault_id: str, cells: list[int], request: dict[str, Any]) -> None:
        """Remember a dependency fault (a validated request) of ``cells`` for their restarts."""
        with self._lock:
            self._faults[fault_id] = StandingFault(
                tuple(cells), dict(request), self._clock() + float(request["duration"])
            )

    def forget_faults(self, fault_id: str | None = None, *, memory: bool = True) -> None:
        """Forget one dependency fault, or every fault (and, with ``memory``, every leak)."""
        with self._lock:
            if fault_id is not None:
                self._faults.pop(fault_id, None)
                return
            self._faults.clear()
            if memory:
                self._memory_pressure.clear()

    def standing_faults(self, index: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """What a process started now for cell ``index`` must start with.

        (the memory pressure left, or None; the dependency faults left, by id). Expired
        faults are dropped here.
        """
        now = self._clock()
        with self._lock:
            pressure = self._memory_pressure.get(index)
            leak = None if pressure is None else pressure.remaining(now)
            if pressure is not None and leak is None:
                del self._memory_pressure[index]
            faults: dict[str, Any] = {}
            for fault_id, fault in list(self._faults.items()):
                left = fault.remaining(now)
                if left is None:
                    del self._faults[fault_id]
                elif index in fault.cells:
                    faults[fault_id] = left
        return leak, faults

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._settings_file.write_text(json.dumps(self.settings.to_json()))
        if self.remote:
            self._start_remote()
            return
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

    def _start_remote(self) -> None:
        self.cells = [
            CellProcess(index, None, remote_url=url)
            for index, url in enumerate(self.settings.cell_urls)
        ]
        self.wait_ready(timeout=60.0)
        for cell in self.cells:
            cell.reachable = True
        self._health_thread = threading.Thread(
            target=self._watch_remote, name="remote-cell-health", daemon=True
        )
        self._health_thread.start()

    def _watch_remote(self) -> None:
        """Ask every remote cell's /health, over and over: alive is 'answered the last time'."""
        with httpx.Client(timeout=1.0) as client:
            while not self._health_stop.wait(REMOTE_HEALTH_SECONDS):
                for cell in self.cells:
                    try:
                        cell.reachable = client.get(f"{cell.url}/health").status_code == 200
                    except httpx.HTTPError:
                        cell.reachable = False

    def _spawn(self, cell: CellProcess) -> None:
        assert cell.sock is not None, "a remote cell is never spawned here"
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
        leak, faults = self.standing_faults(cell.index)
        if leak is not None:
            command += ["--memory-pressure", json.dumps(leak)]
        if faults:
            command += ["--faults", json.dumps(faults)]
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
        if cell.remote_url is not None or not cell.alive or cell.process is None:
            return False
        cell.killed_at = time.time()
        cell.process.send_signal(signal.SIGKILL)
        cell.process.wait(timeout=10)
        return True

    def restart_dead(self) -> list[int]:
        """Start every cell whose process is gone; returns their indexes (once ready)."""
        with self._lock:
            self.reap()  # a cell restarting on its own is not dead
            dead = [cell for cell in self.cells if not cell.alive and cell.remote_url is None]
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
        self._health_stop.set()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5.0)
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
            if cell.sock is not None:
                cell.sock.close()
            # Nothing a next start could mistake for its own. Databases, logs, events and the
            # settings the run used stay: they are its record (.ci/weekly.sh collects them).
            exit_marker(self.run_dir, cell.index).unlink(missing_ok=True)
