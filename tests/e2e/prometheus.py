"""A real Prometheus server (Debian's binary) on 127.0.0.1 with its own temporary storage."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, promql: str) -> list[dict[str, object]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5).json()
        result: list[dict[str, object]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def prometheus_binary() -> str:
    """The prometheus binary; skip without it, except in CI where its absence is a failure."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CHAOSEMERGENCE_REQUIRE_PROMETHEUS") or os.environ.get("CI"):
            pytest.fail("prometheus is not installed; .ci/run installs Debian's package")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return binary


def start_prometheus(workdir: Path, port: int, targets: list[str]) -> PrometheusServer:
    """Scrape `targets` every second; return once every target is up (up == 1)."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: chaosemergence\n    static_configs:\n"
        f"      - targets: {targets!r}\n"
    )
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
        try:
            up = server.query("up")
            if len(up) == len(targets) and all(r["value"][1] == "1" for r in up):  # type: ignore[index]
                return server
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError("prometheus targets did not come up")
