"""Shared fixtures: a real reference system as processes, on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_LEASE_SECONDS = 3600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningSystem:
    """A `chaosemergence serve` process tree started by a test."""

    url: str
    port: int
    state_dir: Path
    process: subprocess.Popen[bytes]
    cells: int

    @property
    def token(self) -> str:
        return (self.state_dir / f"admin-token-{self.port}").read_text().strip()

    @property
    def configuration(self) -> dict[str, str]:
        return {"emergence_url": self.url, "emergence_state_dir": str(self.state_dir)}

    @property
    def admin_url(self) -> str:
        """The admin API's own listener (what the extension talks to)."""
        return (self.state_dir / f"admin-url-{self.port}").read_text().strip()

    def admin(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        url = f"{self.admin_url}{path}"
        return httpx.request(method, url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def cell_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]


def start_system(
    state_dir: Path,
    cells: int = 3,
    port: int | None = None,
    overrides: dict[str, object] | None = None,
    flags: tuple[str, ...] = (),
) -> RunningSystem:
    """`chaosemergence serve` as a subprocess (with a `--config` file when `overrides`, and
    any other `flags`, e.g. `--prometheus`)."""
    port = port or free_port()
    extra: list[str] = list(flags)
    # A test that switches defenses off with a raw admin call stands for a live experiment,
    # which renews its lease: give the system a lease longer than any test (the lease itself
    # is tested with short ones, passed per request: tests/e2e/test_trust.py).
    overrides = {"lease_seconds": TEST_LEASE_SECONDS, **(overrides or {})}
    if overrides:
        state_dir.mkdir(parents=True, exist_ok=True)
        config = state_dir / "overrides.json"
        config.write_text(json.dumps(overrides))
        extra += ["--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "CHAOSEMERGENCE_ADMIN_TOKEN"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosemergence.cli",
            "serve",
            "--cells",
            str(cells),
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return RunningSystem(url, port, state_dir, process, cells)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("reference system did not start")


def stop_system(system: RunningSystem) -> None:
    children = system.cell_pids()
    system.process.send_signal(signal.SIGTERM)
    system.process.wait(timeout=30)
    for pid in children:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """A 3-cell reference system shared by the tests of one module."""
    running = start_system(tmp_path_factory.mktemp("emergence"))
    yield running
    stop_system(running)


@pytest.fixture
def clean_system(system: RunningSystem) -> Iterator[RunningSystem]:
    """The module's system, reset before and after the test."""
    assert system.admin("POST", "/admin/reset").status_code == 200
    yield system
    system.admin("POST", "/admin/reset")
