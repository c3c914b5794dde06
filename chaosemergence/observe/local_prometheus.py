"""A local Prometheus beside `chaosemergence serve --prometheus`.

Debian's `prometheus` binary on 127.0.0.1, with the configuration of
`chaosemergence.observe.prometheus_config` (the gateway's /targets, the shipped alert rules)
and its own storage under the state folder. It is started before the system (service
discovery retries until the gateway answers) and stopped with it; the kernel also sends it
SIGTERM if the serve process dies without stopping it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from chaosemergence.observe.prometheus_config import prometheus_yaml

__all__ = ["LocalPrometheus", "PrometheusUnavailable"]

READY_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


class PrometheusUnavailable(RuntimeError):
    """No prometheus binary, or it would not start."""


# Resolved in the parent: the child, between fork and exec, only makes the call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # SIGTERM when the thread that started it ends: `serve` starts it from its main thread.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


class LocalPrometheus:
    def __init__(
        self,
        targets_url: str,
        port: int,
        folder: Path,
        *,
        alertmanagers: list[str] | None = None,
        rule_files: list[str] | None = None,
        binary: str | None = None,
    ) -> None:
        found = binary or shutil.which("prometheus")
        if found is None:
            raise PrometheusUnavailable(
                "--prometheus needs Prometheus' `prometheus` binary on PATH "
                "(Debian/Ubuntu: apt-get install prometheus)"
            )
        self.binary = found
        self.targets_url = targets_url
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.folder = folder
        self.alertmanagers = alertmanagers or []
        self.rule_files = rule_files  # None: the shipped alerts.yml
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the config, start Prometheus, return once it is ready (or raise)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "prometheus.yml"
        config.write_text(
            prometheus_yaml(
                self.targets_url, rule_files=self.rule_files, alertmanagers=self.alertmanagers
            )
        )
        log = self.folder / "prometheus.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.folder / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-800:]
                self.process = None
                raise PrometheusUnavailable(
                    f"prometheus exited at start (is port {self.port} free?): {tail}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusUnavailable(f"prometheus not ready after {READY_SECONDS:.0f} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
