"""Clean shutdown (docs/trust.md): after SIGTERM, SIGINT, the control's cleanup, or the
gateway being SIGKILLed, no process of the system, no listening port and no token or
admin-URL file remains."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from chaosemergence.controls import reference_system
from chaosemergence.settings import ExtensionSettings
from tests.app.helpers import wait_for
from tests.conftest import RunningSystem, free_port, start_system


@dataclass
class Footprint:
    """What a running system holds: its processes, its listening ports, its files."""

    pids: list[int]
    ports: list[int]
    files: list[Path]


def footprint(gateway_pid: int, port: int, state_dir: Path) -> Footprint:
    gateway = psutil.Process(gateway_pid)
    pids = [gateway_pid] + [c.pid for c in gateway.children(recursive=True)]
    ports = sorted(
        {
            conn.laddr.port
            for pid in pids
            for conn in psutil.Process(pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
    )
    files = [
        state_dir / f"admin-token-{port}",
        state_dir / f"admin-url-{port}",
    ]
    return Footprint(pids, ports, files)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def leftovers(before: Footprint) -> list[str]:
    found = [f"pid {p} alive" for p in before.pids if psutil.pid_exists(p) and _running(p)]
    found += [f"port {p} listening" for p in before.ports if _listening(p)]
    found += [f"{f} exists" for f in before.files if f.exists()]
    return found


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _started(tmp_path: Path) -> tuple[RunningSystem, Footprint]:
    system = start_system(tmp_path, cells=2)
    held = footprint(system.process.pid, system.port, tmp_path)
    # The footprint is real: gateway + 2 cells, the gateway's two listeners + 2 cell sockets.
    assert len(held.pids) == 3 and len(held.ports) >= 4, held
    assert system.port in held.ports
    assert all(f.exists() for f in held.files), held.files
    # The token file and the admin-URL file: their owner's only.
    modes = [f.stat().st_mode & 0o777 for f in held.files]
    assert modes == [0o600, 0o600], [oct(m) for m in modes]
    return system, held


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM or SIGINT: the gateway stops its cells, closes every port, removes its files."""
    system, held = _started(tmp_path)
    try:
        system.process.send_signal(sig)
        assert system.process.wait(timeout=30) == 0
        wait_for(lambda: leftovers(held), lambda found: found == [], 10, "a clean shutdown")
    finally:
        if system.process.poll() is None:
            system.process.kill()
            system.process.wait(timeout=10)


def test_a_sigkilled_gateway_leaves_nothing_behind(tmp_path: Path) -> None:
    """The gateway SIGKILLed (no cleanup of its own): its cells notice, leave, and remove the
    token and admin-URL files it could not."""
    system, held = _started(tmp_path)
    system.process.send_signal(signal.SIGKILL)
    system.process.wait(timeout=10)
    wait_for(lambda: leftovers(held), lambda found: found == [], 15, "the orphaned cells' exit")


def test_the_controls_cleanup_leaves_nothing_behind(tmp_path: Path) -> None:
    """The reference-system control's cleanup (also run on an interrupted run) stops the
    system it started, leaving nothing."""
    port = free_port()
    settings = ExtensionSettings.from_chaos(
        {"emergence_url": f"http://127.0.0.1:{port}", "emergence_state_dir": str(tmp_path)}, None
    )
    env_token = os.environ.pop("CHAOSEMERGENCE_ADMIN_TOKEN", None)
    try:
        process = reference_system.start_reference_system(settings, 2, 7)
    finally:
        if env_token is not None:
            os.environ["CHAOSEMERGENCE_ADMIN_TOKEN"] = env_token
    reference_system._started = process
    held = footprint(process.pid, port, tmp_path)
    assert len(held.pids) == 3 and all(f.exists() for f in held.files)
    reference_system.cleanup_control()
    assert reference_system._started is None
    wait_for(lambda: leftovers(held), lambda found: found == [], 10, "the control's cleanup")


def test_a_non_loopback_bind_without_an_explicit_token_is_refused(tmp_path: Path) -> None:
    """`serve --host 0.0.0.0` with a generated token: refused (exit 2, naming the variable),
    before anything is bound, started or written."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CHAOSEMERGENCE_ADMIN_TOKEN"}
    command = [sys.executable, "-m", "chaosemergence.cli", "serve", "--host", "0.0.0.0"]
    answer = subprocess.run(
        [*command, "--port", str(port), "--cells", "1", "--state-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.returncode == 2, answer.stderr
    assert "CHAOSEMERGENCE_ADMIN_TOKEN" in answer.stderr
    assert not _listening(port)
    assert list(tmp_path.iterdir()) == []
