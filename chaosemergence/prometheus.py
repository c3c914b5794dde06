"""Ask a Prometheus server for numbers: TLS verified, credentials from `secrets`, timeouts.

`PrometheusAccess.from_chaos` reads where Prometheus is and how to reach it (the one place
that does); `query_scalar` answers one number; `increase_samples` answers what the reference
system's own `/admin/increase` answers (`{name, labels, value}` per counter and histogram
series, how much it grew over a window), so every windowed probe can read through
Prometheus.

Configuration:
- `prometheus_url`, or `prometheus_base_url` as chaostoolkit-prometheus names it (env
  CHAOSEMERGENCE_PROMETHEUS_URL);
- `prometheus_verify_tls` (default true): verify the server's certificate; false only for a
  self-signed test server;
- `prometheus_ca_bundle`: a PEM file of the CAs to trust instead of the default ones;
- `prometheus_timeout`: seconds for each call (default: `emergence_timeout`, else 10).

Secrets (a `prometheus` scope, or top-level keys with a `prometheus_` prefix):
- `token`: sent as `Authorization: Bearer <token>`;
- `username` and `password`: HTTP basic authentication.
"""

from __future__ import annotations

import logging
import math
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from chaoslib.exceptions import ActivityFailed

__all__ = [
    "PROMETHEUS_URL_ENV",
    "SERIES_SUFFIXES",
    "PrometheusAccess",
    "increase_samples",
    "query_scalar",
]

logger = logging.getLogger("chaostoolkit")

PROMETHEUS_URL_ENV = "CHAOSEMERGENCE_PROMETHEUS_URL"
DEFAULT_TIMEOUT = 10.0
# The cumulative series of counters and histograms, as the services' own metric window keeps
# them (chaosemergence.app.window): `_created` and gauges are left out.
SERIES_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_SERIES = re.compile(r"emergence_[a-zA-Z0-9_]+(?:" + "|".join(SERIES_SUFFIXES) + ")")
# Labels Prometheus adds to every scraped series (the target's), which the services' own
# samples do not carry: summed away, as `samples_total` would sum the per-process samples.
TARGET_LABELS = ("instance", "job")


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise ActivityFailed(f"{name} must be true or false, got {value!r}")


def _secret(secrets: dict[str, Any] | None, key: str) -> str | None:
    """`secrets.prometheus.<key>`, else a top-level `prometheus_<key>`."""
    secrets = secrets or {}
    scoped = secrets.get("prometheus")
    value = scoped.get(key) if isinstance(scoped, dict) else None
    if value is None:
        value = secrets.get(f"prometheus_{key}")
    return None if value is None else str(value)


@dataclass(frozen=True)
class PrometheusAccess:
    """Where a Prometheus server is and how to talk to it."""

    url: str
    timeout: float = DEFAULT_TIMEOUT
    # True: verify against httpx's CAs (certifi, or SSL_CERT_FILE); a path: against that PEM
    # bundle; False: don't.
    verify: bool | str = True
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ActivityFailed(f"prometheus_url must be an http(s) URL, got {self.url!r}")
        if not 0 < self.timeout <= 600:
            raise ActivityFailed(f"prometheus_timeout must be in (0, 600] s, got {self.timeout}")
        if self.token and (self.username or self.password):
            raise ActivityFailed(
                "secrets give Prometheus both a token and a username/password: keep one"
            )
        if (self.username is None) != (self.password is None):
            raise ActivityFailed(
                "secrets give Prometheus a username without a password (or the reverse): "
                "basic authentication needs both"
            )

    @classmethod
    def from_chaos(
        cls, configuration: dict[str, Any] | None, secrets: dict[str, Any] | None
    ) -> PrometheusAccess | None:
        """The configured Prometheus, or None when no URL is configured."""
        config = configuration or {}
        url = (
            config.get("prometheus_url")
            or config.get("prometheus_base_url")
            or os.environ.get(PROMETHEUS_URL_ENV)
        )
        if not url:
            return None
        timeout = config.get("prometheus_timeout", config.get("emergence_timeout", DEFAULT_TIMEOUT))
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise ActivityFailed(f"prometheus_timeout must be a number, got {timeout!r}") from None
        verify: bool | str = _flag(
            "prometheus_verify_tls", config.get("prometheus_verify_tls", True)
        )
        bundle = config.get("prometheus_ca_bundle")
        if bundle:
            if not verify:
                raise ActivityFailed(
                    "prometheus_ca_bundle is set but prometheus_verify_tls is false: "
                    "a CA bundle only means something when certificates are verified"
                )
            if not Path(str(bundle)).is_file():
                raise ActivityFailed(f"prometheus_ca_bundle: no such file {bundle!r}")
            verify = str(bundle)
        return cls(
            str(url).rstrip("/"),
            timeout,
            verify,
            _secret(secrets, "token"),
            _secret(secrets, "username"),
            _secret(secrets, "password"),
        )

    def _client(self) -> httpx.Client:
        auth = (self.username, self.password) if self.username is not None else None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        verify: bool | ssl.SSLContext = (
            self.verify
            if isinstance(self.verify, bool)
            else (ssl.create_default_context(cafile=self.verify))
        )
        return httpx.Client(
            base_url=self.url,
            timeout=self.timeout,
            verify=verify,
            auth=auth,  # type: ignore[arg-type]
            headers=headers,
        )

    def api(self, path: str, params: dict[str, Any], what: str) -> Any:
        """GET `/api/v1/<path>` and return its `data`; ActivityFailed saying what went wrong."""
        try:
            with self._client() as client:
                answer = client.get(f"/api/v1/{path}", params=params)
        except httpx.ConnectError as error:
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(error):
                hint = (
                    " (its TLS certificate is not trusted: give its CA in prometheus_ca_bundle, "
                    "or set prometheus_verify_tls: false for a test server)"
                )
            raise ActivityFailed(
                f"{what}: cannot reach Prometheus at {self.url}{hint}: {error}"
            ) from None
        except httpx.TimeoutException:
            raise ActivityFailed(
                f"{what}: Prometheus at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise ActivityFailed(f"{what}: Prometheus at {self.url} failed: {error}") from None
        if answer.status_code in (401, 403):
            given = (
                "a bearer token" if self.token
                else f"user {self.username!r}" if self.username
                else "no credentials"
            )  # fmt: skip
            raise ActivityFailed(
                f"{what}: Prometheus at {self.url} refused {given} ({answer.status_code}): "
                "check secrets prometheus.token or prometheus.username/password"
            )
        try:
            body = answer.json()
        except ValueError:
            raise ActivityFailed(
                f"{what}: Prometheus at {self.url} answered {answer.status_code} with no JSON: "
                f"{answer.text[:200]!r}"
            ) from None
        if answer.status_code != 200 or body.get("status") != "success":
            raise ActivityFailed(
                f"{what}: Prometheus at {self.url} answered {answer.status_code}: "
                f"{body.get('errorType', '')} {body.get('error', body)}"
            )
        return body["data"]

    def query(self, query: str, at: float | None = None) -> Any:
        """The result of an instant query (a list of series, or a [time, value] scalar)."""
        params: dict[str, Any] = {"query": query}
        if at is not None:
            params["time"] = at
        data = self.api("query", params, f"query {query!r}")
        return data.get("result")


def _access(prometheus: PrometheusAccess | str, timeout: float | None) -> PrometheusAccess:
    if isinstance(prometheus, PrometheusAccess):
        return prometheus
    return PrometheusAccess(prometheus, timeout or DEFAULT_TIMEOUT)


def query_scalar(
    prometheus: PrometheusAccess | str,
    query: str,
    timeout: float | None = None,
    *,
    at: float | None = None,
) -> float:
    """The value of `query` as a float: a scalar or a single-sample vector; NaN for no data."""
    access = _access(prometheus, timeout)
    result = access.query(query, at)
    url = access.url
    if isinstance(result, list) and len(result) == 2 and isinstance(result[1], str):
        value = result[1]
    elif isinstance(result, list):
        if not result:
            return math.nan
        if len(result) > 1:
            raise ActivityFailed(
                f"query {query!r} against {url} returned {len(result)} series; "
                "aggregate it to one (e.g. sum(...)) to use it as a probe"
            )
        value = result[0]["value"][1]
    else:
        raise ActivityFailed(f"query {query!r} against {url} returned {result!r}, not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ActivityFailed(
            f"query {query!r} against {url} returned non-number {value!r}"
        ) from None


def increase_samples(
    prometheus: PrometheusAccess | str,
    seconds: float,
    timeout: float | None = None,
    *,
    at: float | None = None,
    selector: str = "",
) -> list[dict[str, Any]]:
    """How much every `emergence_*` counter and histogram series grew over the last `seconds`.

    The shape of the services' `/admin/increase`: a list of `{"name", "labels", "value"}`,
    one per series (bucket series keep their `le`), from `increase(NAME[Ns])` summed over
    the scrape targets (the gateway and every cell), restricted to the series matching
    `selector` (label matchers such as `job="shop"`). `increase()` drops the metric name, so
    the names seen in the window are listed first, then each is asked for, all at the same
    evaluation time `at` (default now). Unlike the embedded window, Prometheus extrapolates
    to the window's edges and cannot see the first increment of a series born inside the
    window (it has no earlier sample at 0): the numbers are close, not identical.
    """
    if not 0 < seconds <= 900:
        raise ActivityFailed(f"window must be in (0, 900] seconds, got {seconds!r}")
    access = _access(prometheus, timeout)
    when = time.time() if at is None else at
    window = f"{round(seconds * 1000)}ms"
    extra = f",{selector}" if selector else ""
    names = access.api(
        "label/__name__/values",
        {"match[]": f'{{__name__=~"emergence_.+"{extra}}}', "start": when - seconds, "end": when},
        "list the emergence_* series",
    )
    samples: list[dict[str, Any]] = []
    for name in sorted(n for n in names if _SERIES.fullmatch(n)):
        query = (
            f"sum without ({', '.join(TARGET_LABELS)}) (increase({name}{{{selector}}}[{window}]))"
        )
        for series in access.query(query, when):
            value = float(series["value"][1])
            if math.isnan(value):
                continue
            samples.append({"name": name, "labels": dict(series["metric"]), "value": value})
    logger.debug(
        "increase over %s s from Prometheus at %s: %d series of %d names",
        seconds,
        access.url,
        len(samples),
        len(names),
    )
    return samples
