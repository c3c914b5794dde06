"""Where the extension sends admin calls: the admin listener a local system publishes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from chaosemergence.client import AdminClient
from chaosemergence.settings import ExtensionSettings
from tests.conftest import RunningSystem, free_port


def _settings(tmp_path: Path, url: str, **config: object) -> ExtensionSettings:
    return ExtensionSettings.from_chaos(
        {"emergence_url": url, "emergence_state_dir": str(tmp_path), **config}, None
    )


def test_published_admin_url_is_used_for_a_local_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file next to the token names the admin listener; a remote URL never reads it."""
    monkeypatch.delenv("CHAOSEMERGENCE_ADMIN_URL", raising=False)
    (tmp_path / "admin-url-8080").write_text("http://127.0.0.1:4242")
    assert _settings(tmp_path, "http://127.0.0.1:8080").admin_url() == "http://127.0.0.1:4242"
    remote = _settings(tmp_path, "http://example.test:8080")
    assert remote.admin_url() == "http://example.test:8080"
    explicit = _settings(tmp_path, "http://127.0.0.1:8080", emergence_admin_url="http://a:1/")
    assert explicit.admin_url() == "http://a:1"


def test_a_stale_published_url_falls_back_to_the_relay(
    clean_system: RunningSystem, tmp_path: Path
) -> None:
    """The published listener is gone (a stale file): the call goes to the main port, which
    relays admin paths to the live admin listener."""
    stale = tmp_path / f"admin-url-{clean_system.port}"
    stale.write_text(f"http://127.0.0.1:{free_port()}")
    (tmp_path / f"admin-token-{clean_system.port}").write_text(clean_system.token)
    client = AdminClient(_settings(tmp_path, clean_system.url))
    with pytest.raises(httpx.ConnectError):
        httpx.get(stale.read_text(), timeout=1)
    state = client.get("/admin/state", what="read state through the relay")
    assert len(state["cells"]) == clean_system.cells
