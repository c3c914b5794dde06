"""Extension settings: the one place that reads `configuration`, `secrets` and the environment.

- `emergence_url` (configuration; env CHAOSEMERGENCE_URL; default http://127.0.0.1:8080)
- `prometheus_url` or `prometheus_base_url` (configuration; env CHAOSEMERGENCE_PROMETHEUS_URL;
  optional; TLS and credentials: chaosemergence.prometheus.PrometheusAccess)
- admin token: secrets `emergence.admin_token`, else env CHAOSEMERGENCE_ADMIN_TOKEN,
  else the 0600 token file the reference system wrote for that port.
- `emergence_timeout` (configuration; seconds for each admin call; default 10)
- `emergence_lease_seconds` (configuration; default 30): how long a change that weakens the
  system (defenses off, jitter removed) outlives this process if it dies unrenewed.
- `emergence_admin_url` (configuration; env CHAOSEMERGENCE_ADMIN_URL; optional): the admin
  API's own listener. Without it, a local system's is read from the file it writes next to
  its token (`admin-url-<port>`); else the admin paths go to `emergence_url`, whose
  listener relays them (docs/trust.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from chaoslib.exceptions import ActivityFailed

from chaosemergence.activity import check_argument
from chaosemergence.contract import (
    TOKEN_ENV,
    admin_url_file_for_port,
    default_state_dir,
    lease_seconds_schema,
    token_file_for_port,
)

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
DEFAULT_LEASE_SECONDS = 30.0
ADMIN_URL_ENV = "CHAOSEMERGENCE_ADMIN_URL"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ExtensionSettings:
    """Where the reference system is and how to talk to it."""

    emergence_url: str
    token: str | None
    timeout: float
    prometheus_url: str | None
    state_dir: Path
    # The admin listener given explicitly (configuration or environment), if any.
    explicit_admin_url: str | None = None
    lease_seconds: float = DEFAULT_LEASE_SECONDS

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
        prometheus = (
            config.get("prometheus_url")
            or config.get("prometheus_base_url")  # chaostoolkit-prometheus' name
            or os.environ.get("CHAOSEMERGENCE_PROMETHEUS_URL")
        )
        state_dir = Path(config.get("emergence_state_dir") or default_state_dir())
        token = ((secrets or {}).get("emergence") or {}).get("admin_token") or (secrets or {}).get(
            "admin_token"
        )
        # Sent with every switch that weakens the system: the service's own limits.
        lease = float(
            check_argument(
                "emergence_lease_seconds",
                config.get("emergence_lease_seconds", DEFAULT_LEASE_SECONDS),
                lease_seconds_schema(),
            )
        )
        admin = config.get("emergence_admin_url") or os.environ.get(ADMIN_URL_ENV)
        if admin:
            admin_parsed = urlparse(str(admin))
            if admin_parsed.scheme not in ("http", "https") or not admin_parsed.hostname:
                raise ActivityFailed(f"emergence_admin_url must be an http(s) URL, got {admin!r}")
        settings = cls(
            url.rstrip("/"),
            token,
            timeout,
            prometheus or None,
            state_dir,
            str(admin).rstrip("/") if admin else None,
            lease,
        )
        return settings

    def admin_url(self) -> str:
        """Where the admin API listens: given, else published by a local system, else the URL.

        Read at every call: a system restarted on the same port has a new admin listener.
        """
        if self.explicit_admin_url:
            return self.explicit_admin_url
        if urlparse(self.emergence_url).hostname in LOOPBACK:
            try:
                published = admin_url_file_for_port(self.port, self.state_dir).read_text().strip()
            except OSError:
                published = ""
            if published.startswith("http://"):
                return published
        return self.emergence_url

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
