"""A service that is not the reference system (user_service.py), started as a process."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.app.helpers import wait_for
from tests.conftest import ROOT


def start_user_service(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "service" / "user_service.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: _status(f"http://127.0.0.1:{port}/metrics"),
        lambda status: status == 200,
        20,
        "the user service answers /metrics",
    )
    return process


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
