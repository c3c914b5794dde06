"""Prometheus reached the way users deploy it: TLS verified, basic auth or a bearer token.

A real Prometheus (Debian's binary) serves HTTPS with a self-signed certificate (made by
openssl) and basic auth through its `--web.config.file`; a bearer token is checked by a small
reverse proxy in front of it, as an auth proxy would. The probes reach it only with the
right credentials and, by default, only when its certificate is trusted.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import pytest
from chaoslib.exceptions import ActivityFailed

import probes
from chaosemergence.prometheus import PrometheusAccess, query_scalar
from tests.conftest import free_port
from tests.e2e.prometheus import prometheus_binary, scrape_config

pytestmark = pytest.mark.e2e
USER, PASSWORD, TOKEN = "chaos", "right-horse-battery", "s3cret-token"


@dataclass
class SecuredPrometheus:
    url: str
    ca: Path


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed; .ci/run installs it")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredPrometheus]:
    """Prometheus on HTTPS (self-signed) with one basic-auth user."""
    workdir = tmp_path_factory.mktemp("secured-prometheus")
    cert, key = _self_signed(workdir)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web = workdir / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    config = workdir / "prometheus.yml"
    config.write_text(scrape_config(targets=[]))
    port = free_port()
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config}",
            f"--web.config.file={web}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            try:
                ready = httpx.get(
                    f"{url}/-/ready",
                    verify=ssl.create_default_context(cafile=cert),
                    auth=(USER, PASSWORD),
                    timeout=2,
                )
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "secured Prometheus did not get ready"
            time.sleep(0.3)
        yield SecuredPrometheus(url, cert)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_basic_auth_with_the_right_password_and_a_trusted_ca_reads_a_number(
    secured: SecuredPrometheus,
) -> None:
    """The right password and the server's CA bundle: the query answers (prometheus_base_url)."""
    configuration = {"prometheus_base_url": secured.url, "prometheus_ca_bundle": str(secured.ca)}
    secrets = {"prometheus": {"username": USER, "password": PASSWORD}}
    assert probes.query_prometheus("vector(42)", configuration, secrets) == 42.0


def test_a_wrong_password_fails_naming_the_user_and_the_secret(
    secured: SecuredPrometheus,
) -> None:
    """A wrong password is a 401 turned into an error naming the user and where to fix it."""
    configuration = {"prometheus_url": secured.url, "prometheus_ca_bundle": str(secured.ca)}
    secrets = {"prometheus": {"username": USER, "password": "wrong"}}
    with pytest.raises(ActivityFailed, match=r"refused user 'chaos' \(401\).*prometheus\.user"):
        probes.query_prometheus("vector(42)", configuration, secrets)
    with pytest.raises(ActivityFailed, match=r"refused no credentials \(401\)"):
        probes.query_prometheus("vector(42)", configuration, None)


def test_a_self_signed_certificate_is_refused_unless_told(secured: SecuredPrometheus) -> None:
    """TLS is verified by default; prometheus_verify_tls: false (and only it) skips that."""
    secrets = {"prometheus_username": USER, "prometheus_password": PASSWORD}
    with pytest.raises(ActivityFailed, match=r"not trusted.*prometheus_ca_bundle"):
        probes.query_prometheus("vector(7)", {"prometheus_url": secured.url}, secrets)
    unverified = {"prometheus_url": secured.url, "prometheus_verify_tls": False}
    assert probes.query_prometheus("vector(7)", unverified, secrets) == 7.0


class _TokenProxy(http.server.BaseHTTPRequestHandler):
    """Relays GETs to the upstream Prometheus only with `Authorization: Bearer TOKEN`."""

    upstream: SecuredPrometheus

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.end_headers()
            return
        answer = httpx.get(
            f"{self.upstream.url}{self.path}",
            verify=ssl.create_default_context(cafile=self.upstream.ca),
            auth=(USER, PASSWORD),
            timeout=10,
        )
        self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer.content)

    def log_message(self, *args: object) -> None:
        pass


def test_a_bearer_token_from_secrets_passes_an_auth_proxy(secured: SecuredPrometheus) -> None:
    """secrets prometheus.token goes out as a bearer token; without it the proxy refuses."""
    handler = type("Proxy", (_TokenProxy,), {"upstream": secured})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        configuration = {"prometheus_url": url}
        assert (
            probes.query_prometheus("vector(3)", configuration, {"prometheus": {"token": TOKEN}})
            == 3.0
        )
        with pytest.raises(ActivityFailed, match=r"refused a bearer token \(401\)"):
            probes.query_prometheus("vector(3)", configuration, {"prometheus": {"token": "bad"}})
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_server_that_never_answers_times_out() -> None:
    """Every call has a timeout: a listener that never answers fails within it, named."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections queue; nothing ever reads or answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        access = PrometheusAccess(url, timeout=0.5)
        with pytest.raises(ActivityFailed, match=r"did not answer within 0.5 s"):
            query_scalar(access, "vector(1)")


@pytest.mark.parametrize(
    ("configuration", "secrets", "message"),
    [
        ({"prometheus_url": "ftp://x"}, None, "prometheus_url must be an http"),
        ({"prometheus_url": "http://x", "prometheus_verify_tls": "maybe"}, None,
         "prometheus_verify_tls must be true or false"),
        ({"prometheus_url": "http://x", "prometheus_ca_bundle": "/nonexistent.pem"}, None,
         "prometheus_ca_bundle: no such file"),
        ({"prometheus_url": "http://x"}, {"prometheus": {"username": "u"}},
         "username without a password"),
        ({"prometheus_url": "http://x"}, {"prometheus": {"token": "t", "username": "u",
                                                          "password": "p"}},
         "both a token and a username"),
        ({"prometheus_url": "http://x", "prometheus_timeout": "soon"}, None,
         "prometheus_timeout must be a number"),
    ],
)  # fmt: skip
def test_bad_prometheus_settings_are_refused_naming_the_key(
    configuration: dict[str, object], secrets: dict[str, object] | None, message: str
) -> None:
    """Each misconfiguration fails before any call, naming the configuration key or secret."""
    with pytest.raises(ActivityFailed, match=message):
        PrometheusAccess.from_chaos(configuration, secrets)
