"""The user's own locustfile against a service that is not the reference system.

The target is tests/service/user_service.py (its own metric names); the locustfile is the
kind a user writes, knowing nothing of chaosemergence. Locust runs as real subprocesses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from chaosemergence.traffic import TrafficSpec, start_traffic, stop_traffic
from chaosemergence.traffic.runner import HTML_REPORT
from tests.conftest import free_port
from tests.service import start_user_service, stop_process

USER_LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Shopper(HttpUser):
    wait_time = constant(0.05)

    @task
    def work(self):
        self.client.get("/work?ms=10", name="shop work")
"""


@pytest.fixture
def shop() -> Iterator[str]:
    port = free_port()
    process = start_user_service(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


@pytest.fixture
def locustfile(tmp_path: Path) -> Path:
    path = tmp_path / "locustfile.py"
    path.write_text(USER_LOCUSTFILE)
    return path


def served(url: str) -> float:
    """The service's own count of requests served (its metric, not Locust's)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shop_http_requests_total{")
    )


def spec(url: str, locustfile: Path, **overrides: object) -> TrafficSpec:
    fields: dict[str, object] = {
        "target_url": url,
        "users": 2,
        "spawn_rate": 10.0,
        "duration": 3,
        "locustfile": str(locustfile),
    }
    return TrafficSpec(**{**fields, **overrides})  # type: ignore[arg-type]


def test_the_users_locustfile_drives_the_service_and_writes_an_html_report(
    shop: str, locustfile: Path, tmp_path: Path
) -> None:
    """Its task names reach Locust's summary; the service counted what Locust sent; a report."""
    state = tmp_path / "traffic"
    run = start_traffic(spec(shop, locustfile), state)
    assert run.wait(timeout=40), "Locust did not stop by itself"
    summary = stop_traffic(state)
    assert summary is not None and summary.source == "final"
    assert set(summary.endpoints) == {"GET shop work"}
    assert summary.requests > 10
    assert served(shop) == summary.requests
    report = (state / HTML_REPORT).read_text()
    assert "<html" in report.lower() and "shop work" in report


def test_the_users_locustfile_runs_distributed_on_locusts_master_and_workers(
    shop: str, locustfile: Path, tmp_path: Path
) -> None:
    """With workers, Locust's own master hands the user's locustfile's users to the workers."""
    state = tmp_path / "traffic"
    run = start_traffic(spec(shop, locustfile, workers=2, users=4), state)
    assert len(run.pids) == 3
    assert run.wait(timeout=60), "distributed Locust did not stop by itself"
    summary = stop_traffic(state)
    assert summary is not None and summary.requests > 10
    assert served(shop) == summary.requests
    logs = " ".join(p.read_text() for p in state.glob("locust-worker-*.log"))
    assert "Traceback" not in logs


def test_a_remote_host_needs_allow_remote(locustfile: Path) -> None:
    """A host that is not loopback is refused with an error naming allow_remote; allowed, not."""
    with pytest.raises(ValueError, match=r"^target_url: 'shop\.example' .*allow_remote: true"):
        spec("https://shop.example", locustfile)
    allowed = spec("https://shop.example", locustfile, allow_remote=True)
    assert allowed.target_url == "https://shop.example"
    with pytest.raises(ValueError, match=r"^allow_remote: must be true or false"):
        spec("https://shop.example", locustfile, allow_remote="yes")


def test_a_missing_locustfile_or_a_built_in_shape_is_refused(locustfile: Path) -> None:
    """The locustfile must exist; shapes belong to the built-in locustfile."""
    with pytest.raises(ValueError, match=r"^locustfile: no such file"):
        spec("http://127.0.0.1:1", Path("/nonexistent/locustfile.py"))
    with pytest.raises(ValueError, match=re.escape("shape: 'spike' shapes the built-in")):
        spec("http://127.0.0.1:1", locustfile, shape="spike")


def test_the_hooks_file_defines_no_user_class() -> None:
    """hooks.py rides beside a user's locustfile: a User class in it would add traffic."""
    from chaosemergence.traffic.runner import HOOKS

    source = HOOKS.read_text()
    assert "class " not in source
    # And it is valid Python the Locust child can import (compiled here, not imported).
    compile(source, str(HOOKS), "exec")


def test_a_long_run_of_the_users_locustfile_is_stopped_gracefully(
    shop: str, locustfile: Path, tmp_path: Path
) -> None:
    """stop_traffic recognizes the user's Locust as its own: SIGINT, final stats, report."""
    state = tmp_path / "traffic"
    run = start_traffic(spec(shop, locustfile, duration=300), state)
    deadline = time.monotonic() + 20
    while served(shop) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    summary = stop_traffic(state)
    assert summary is not None and summary.source == "final"
    assert (state / HTML_REPORT).is_file()
    assert all(not psutil.pid_exists(pid) or _zombie(pid) for pid in run.pids)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
