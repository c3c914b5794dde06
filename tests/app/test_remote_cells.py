"""Cells started on their own (`chaosemergence cell`), a gateway pointed at them by address.

What lets the system outgrow one machine (docs/scaling.md): the gateway's cell list is
configuration (`serve --cell-url`, settings `cell_urls`). Here the cells run on this host,
started separately; on other hosts only the addresses change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from chaosemergence.app.settings import SystemSettings
from tests.app.helpers import users_of, wait_for
from tests.conftest import free_port

TOKEN = "remote-cells-test-token-0123456789abcdef"


@dataclass
class Remote:
    gateway: subprocess.Popen[bytes]
    cells: list[subprocess.Popen[bytes]]
    url: str
    cell_urls: list[str]
    admin_url: str


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    env = {**os.environ, "CHAOSEMERGENCE_ADMIN_TOKEN": TOKEN}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cells: list[subprocess.Popen[bytes]] = []
    cell_urls: list[str] = []
    gateway: subprocess.Popen[bytes] | None = None
    try:
        for index in range(2):
            cell_port = free_port()
            cell_urls.append(f"http://127.0.0.1:{cell_port}")
            command = [sys.executable, "-m", "chaosemergence.cli", "cell", f"--index={index}"]
            command += ["--cells=2", f"--port={cell_port}", f"--gateway-url={url}"]
            command += [f"--state-dir={tmp_path / 'cells'}"]
            log = (tmp_path / f"cell-{index}.log").open("wb")
            cells.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for cell_url in cell_urls:
            wait_for(lambda u=cell_url: _healthy(u), bool, 60, f"cell {cell_url} up")
        command = [sys.executable, "-m", "chaosemergence.cli", "serve", f"--port={port}"]
        command += [f"--cell-url={u}" for u in cell_urls]
        command += [f"--state-dir={tmp_path / 'gateway'}"]
        log = (tmp_path / "gateway.log").open("wb")
        gateway = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: _healthy(url), bool, 60, "gateway up")
        admin_url = (tmp_path / "gateway" / f"admin-url-{port}").read_text().strip()
        yield Remote(gateway, cells, url, cell_urls, admin_url)
    finally:
        if gateway is not None:
            _stop(gateway)
        for cell in cells:
            _stop(cell)


def test_gateway_routes_to_cells_started_elsewhere(remote: Remote) -> None:
    """No cell process of its own; each user reaches its home cell at the given address."""
    children = subprocess.run(
        ["pgrep", "-P", str(remote.gateway.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert children == []
    for cell in (0, 1):
        user = users_of(2, cell, 1, "remote-")[0]
        answer = httpx.get(f"{remote.url}/users/{user}/profile", timeout=10)
        assert answer.status_code == 200 and answer.json()["cell"] == cell
    headers = {"Authorization": f"Bearer {TOKEN}"}
    state = httpx.get(f"{remote.admin_url}/admin/state", headers=headers, timeout=10).json()
    assert [c["url"] for c in state["cells"]] == remote.cell_urls
    # The gateway cannot kill what it did not start: it says where the cell runs.
    killed = httpx.post(f"{remote.admin_url}/admin/cells/0/kill", headers=headers, timeout=10)
    assert killed.status_code == 409 and remote.cell_urls[0] in killed.json()["error"]
    assert remote.cells[0].poll() is None


def test_a_remote_cell_that_stops_answering_is_down_and_only_its_users_fail(
    remote: Remote,
) -> None:
    _stop(remote.cells[1])
    wait_for(
        lambda: httpx.get(f"{remote.url}/health", timeout=5).json()["alive"],
        lambda alive: alive == 1,
        10,
        "the gateway sees cell 1 down",
    )
    home_1, home_0 = users_of(2, 1, 1, "down-")[0], users_of(2, 0, 1, "up-")[0]
    assert httpx.get(f"{remote.url}/users/{home_1}/profile", timeout=10).status_code == 503
    assert httpx.get(f"{remote.url}/users/{home_0}/profile", timeout=10).status_code == 200


def test_serve_with_cell_urls_needs_a_token_of_your_own(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHAOSEMERGENCE_ADMIN_TOKEN"}
    command = [sys.executable, "-m", "chaosemergence.cli", "serve", f"--port={free_port()}"]
    command += ["--cell-url=http://127.0.0.1:1", f"--state-dir={tmp_path}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--cell-url needs CHAOSEMERGENCE_ADMIN_TOKEN" in done.stderr


@pytest.mark.parametrize(
    ("cells", "urls", "field"),
    [
        (1, ("http://10.0.0.5:9001", "http://10.0.0.6:9001"), "cells"),
        (1, ("https://10.0.0.5:9001",), "cell_urls"),
        (1, ("http://10.0.0.5:9001/path",), "cell_urls"),
        (1, ("http://10.0.0.5",), "cell_urls"),
    ],
)
def test_cell_urls_are_checked_naming_the_field(
    cells: int, urls: tuple[str, ...], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{field} must"):
        SystemSettings(cells=cells, cell_urls=urls)


def test_cell_urls_survive_the_settings_file() -> None:
    """The gateway writes its settings as JSON for the record; the list comes back whole."""
    settings = SystemSettings(cells=2, cell_urls=("http://10.0.0.5:9001", "http://[::1]:9002"))
    assert SystemSettings.from_json(settings.to_json()).cell_urls == settings.cell_urls


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--gateway-url=gw:8080"], "--gateway-url"),
        (["--gateway-url=http://127.0.0.1:8080", "--index=2"], "index"),
    ],
)
def test_cell_command_refuses_bad_input_naming_it(
    tmp_path: Path, flags: list[str], named: str
) -> None:
    env = {**os.environ, "CHAOSEMERGENCE_ADMIN_TOKEN": TOKEN}
    command = [sys.executable, "-m", "chaosemergence.cli", "cell", "--index=0", "--cells=2"]
    command += [f"--port={free_port()}", f"--state-dir={tmp_path}", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and named in done.stderr
