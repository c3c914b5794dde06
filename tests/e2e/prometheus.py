"""A real Prometheus server (Debian's binary) on 127.0.0.1 with its own temporary storage.

It scrapes every second either a fixed list of targets or, as the weekly run does
(.ci/weekly.sh), whatever the gateway's `/targets` lists (`http_sd_configs`, refreshed every
second, so a system that starts after Prometheus is found).
"""

from __future__ import annotations

import json
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

    def up(self) -> dict[str, str]:
        """Each scraped target's `up` value, by instance."""
        return {
            str(r["metric"]["instance"]): str(r["value"][1])  # type: ignore[index]
            for r in self.query("up")
        }

    def queries_answered(self) -> float:
        """How many instant queries this server has answered (its own request counter)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("prometheus_http_requests_total{")
            and 'handler="/api/v1/query"' in line
        )

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


def scrape_config(targets: list[str] | None = None, http_sd: str | None = None) -> str:
    """prometheus.yml scraping `targets`, or the targets `http_sd` (a /targets URL) lists."""
    if (targets is None) == (http_sd is None):
        raise ValueError("give either targets or http_sd")
    if http_sd is not None:
        discovery = (
            f"    http_sd_configs:\n      - url: {json.dumps(http_sd)}\n"
            "        refresh_interval: 1s\n"
        )
    else:
        discovery = f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: chaosemergence\n" + discovery
    )


def start_prometheus(
    workdir: Path,
    port: int,
    targets: list[str] | None = None,
    *,
    http_sd: str | None = None,
    expect_up: int | None = None,
) -> PrometheusServer:
    """Scrape `targets` (or what `http_sd` lists) every second; return once `expect_up`
    targets (default: every one of `targets`; 0: none, just ready) are up (up == 1)."""
    wanted = len(targets or []) if expect_up is None else expect_up
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(targets, http_sd))
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
            if wanted == 0:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    return server
            else:
                up = server.up()
                if len(up) >= wanted and all(value == "1" for value in up.values()):
                    return server
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError("prometheus targets did not come up")
