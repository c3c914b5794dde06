"""Extension settings: the one place that reads `configuration`, `secrets` and the environment.

- `emergence_url` (configuration; env CHAOSEMERGENCE_URL; default http://127.0.0.1:8080)
- `prometheus_url` (configuration; env CHAOSEMERGENCE_PROMETHEUS_URL; optional)
- admin token: secrets `emergence.admin_token`, else env CHAOSEMERGENCE_ADMIN_TOKEN,
  else the 0600 token file the reference system wrote for that port.
- `emergence_timeout` (configuration; seconds for each admin call; default 10)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chaoslib.exceptions import ActivityFailed

from chaosemergence.app.auth import TOKEN_ENV
from chaosemergence.app.settings import default_state_dir, token_file_for_port

__all__ = [
    "BASELINE_KEY",
    "BASELINE_WINDOW_KEY",
    "DEFAULT_URL",
    "EXPERIMENT_START_KEY",
    "METHOD_START_KEY",
    "ExtensionSettings",
    "traffic_state_dir",
]

DEFAULT_URL = "http://127.0.0.1:8080"
# What the controls record in a run's configuration for the probes to read.
EXPERIMENT_START_KEY = "emergence_experiment_started_at"
METHOD_START_KEY = "emergence_method_started_at"
BASELINE_KEY = "emergence_baseline_samples"
BASELINE_WINDOW_KEY = "emergence_baseline_window"
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ExtensionSettings:
    """Where the reference system is and how to talk to it."""

    emergence_url: str
    token: str | None
    timeout: float
    prometheus_url: str | None
    state_dir: Path

    @property
    def port(self) -> int:
        parsed = urlparse(self.emergence_url)
        return parsed.port or (443 if parsed.scheme == "https" else 80)

    @classmethod
    def from_chaos(
        cls, configuration: dict[str, Any] | None, secrets: dict[str, Any] | None
    ) -> ExtensionSettings:
        config = configuration or {}
        url = str(
            config.get("emergence_url") or os.environ.get("CHAOSEMERGENCE_URL") or DEFAULT_URL
        )
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ActivityFailed(f"emergence_url must be an http(s) URL, got {url!r}")
        timeout = config.get("emergence_timeout", DEFAULT_TIMEOUT)
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise ActivityFailed(f"emergence_timeout must be a number, got {timeout!r}") from None
        prometheus = config.get("prometheus_url") or os.environ.get("CHAOSEMERGENCE_PROMETHEUS_URL")
        state_dir = Path(config.get("emergence_state_dir") or default_state_dir())
        token = ((secrets or {}).get("emergence") or {}).get("admin_token") or (secrets or {}).get(
            "admin_token"
        )
        settings = cls(url.rstrip("/"), token, timeout, prometheus or None, state_dir)
        return settings

    def admin_token(self) -> str:
        """The bearer token, from secrets, the environment or the token file."""
        if self.token:
            return self.token
        if os.environ.get(TOKEN_ENV):
            return os.environ[TOKEN_ENV]
        path = token_file_for_port(self.port, self.state_dir)
        try:
            return path.read_text().strip()
        except OSError as error:
            raise ActivityFailed(
                f"no admin token for {self.emergence_url}: set secrets emergence.admin_token or "
                f"{TOKEN_ENV}, or start the reference system so it writes {path} ({error.strerror})"
            ) from None


def traffic_state_dir(settings: ExtensionSettings, run: str = "") -> Path:
    """Where a Locust run against this target keeps its pids, CSV stats and logs.

    `run` names an extra, concurrent run (e.g. a spike on top of the baseline traffic).
    """
    if run and not run.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"run must be letters, digits, - or _, got {run!r}")
    return settings.state_dir / (
        f"traffic-{settings.port}-{run}" if run else f"traffic-{settings.port}"
    )
