"""One contract, both sides (issue 11): an activity accepts exactly what the service accepts.

For every argument an activity sends to the admin API, the values around the service's
limits are derived from the contract's schemas (the ones the gateway checks requests with),
never written here. Each value goes through the real activity against a local HTTP server
that records what reaches it, and through the gateway's own check (``AdminContract``):

- a value the service accepts must reach it, and the request that reached it must pass the
  service's check as recorded;
- a value the service refuses must be refused by the activity before anything is sent, as
  an ActivityFailed that starts with the argument's name.

So a client limit that drifts from the server's (an activity accepting a duration the
service refuses, or refusing a window it serves) fails here. The recording server stands in
for the gateway's transport only (its answers are canned); the verdicts are the gateway's
checks, run in process. The real gateway's answers to the same requests are
tests/app/test_admin_api.py's.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from chaoslib.exceptions import ActivityFailed

from chaosemergence import actions, probes
from chaosemergence import contract as c

# The gateway's contract for the largest system (the client cannot know the size of its own).
SERVER = c.AdminContract(c.MAX_CELLS, ("database",), "shared", c.MAX_CORRELATION_WINDOW_SECONDS)
TOKEN = "contract-test-token-0123456789"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any


class _Recorder(BaseHTTPRequestHandler):
    calls: list[Recorded]

    def _answer(self) -> None:
        parsed = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        self.calls.append(
            Recorded(self.command, parsed.path, query, json.loads(raw) if raw else None)
        )
        answer = {
            "id": "f1",
            "expires_at": 0,
            "cells": {},
            "names": [],
            "lease": {"held": False},
            "samples": [],
            "unanswered": {},
        }
        data = json.dumps(answer).encode()
        self.send_response(201 if parsed.path == "/admin/faults" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[list[Recorded], dict[str, Any], dict[str, Any]]]:
    calls: list[Recorded] = []
    handler = type("Handler", (_Recorder,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    configuration = {"emergence_url": url, "emergence_admin_url": url, "emergence_timeout": 5}
    secrets = {"emergence": {"admin_token": TOKEN}}
    try:
        yield calls, configuration, secrets
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _near(schema: dict[str, Any]) -> list[float]:
    """The values on both sides of each of the schema's bounds."""
    values: list[float] = []
    integer = schema.get("type") == "integer"
    for bound in ("minimum", "maximum"):
        if bound in schema:
            edge = float(schema[bound])
            if integer:
                values += [edge - 1, edge, edge + 1]
            else:
                values += [math.nextafter(edge, -math.inf), edge, math.nextafter(edge, math.inf)]
    assert values, f"no bound in {schema}"
    return values


def _fault(**fields: Any) -> dict[str, Any]:
    return {
        "kind": "error",
        "percentage": 100.0,
        "duration": 60.0,
        "dependency": "database",
        "latency_ms": 0.0,
        "cells": None,
        **fields,
    }


@dataclass(frozen=True)
class Case:
    """An activity argument, the schema holding the service's limit, and how to call both."""

    argument: str
    schema: dict[str, Any]
    call: Callable[[float, dict[str, Any], dict[str, Any]], Any]
    # The service's verdict on the request carrying `value` (InvalidField: refused).
    serve: Callable[[Recorded | float], None]


def _value_of(request: Recorded | float, pick: Callable[[Recorded], Any]) -> Any:
    return pick(request) if isinstance(request, Recorded) else request


def _check_fault_with(field: str) -> Callable[[Recorded | float], None]:
    def serve(request: Recorded | float) -> None:
        if isinstance(request, Recorded):
            assert (request.method, request.path) == ("POST", "/admin/faults")
            SERVER.check_fault(request.body)
        else:
            value: Any = [int(request)] if field == "cells" else request
            kind = "latency" if field == "latency_ms" else "error"
            SERVER.check_fault(_fault(kind=kind, **{field: value}))

    return serve


def _check_pressure_with(field: str) -> Callable[[Recorded | float], None]:
    def serve(request: Recorded | float) -> None:
        if isinstance(request, Recorded):
            SERVER.check_index(request.path.split("/")[3])
            c.check_pressure(request.body)
        elif field == "cell":
            SERVER.check_index(str(int(request)))
        else:
            c.check_pressure({"megabytes_per_second": 10, "duration": 60, field: request})

    return serve


def _check_query(parameter: str, schema: dict[str, Any]) -> Callable[[Recorded | float], None]:
    def serve(request: Recorded | float) -> None:
        raw = _value_of(request, lambda r: r.query[parameter])
        SERVER.check_query_number(str(raw), parameter, schema, 30.0)

    return serve


def _check_lease(path: str) -> Callable[[Recorded | float], None]:
    schema = SERVER.defenses_schema(["circuit_breaker"]) if "defenses" in path else SERVER.switch

    def serve(request: Recorded | float) -> None:
        if isinstance(request, Recorded):
            assert request.path == path
            c.check(schema, request.body)
        else:
            c.check(schema, {"enabled": False, "lease_seconds": request})

    return serve


FAULT = SERVER.fault["properties"]
PRESSURE = SERVER.pressure["properties"]
CASES = [
    Case(
        "percentage",
        FAULT["percentage"],
        lambda v, conf, sec: actions.inject_errors(v, configuration=conf, secrets=sec),
        _check_fault_with("percentage"),
    ),
    Case(
        "duration",
        FAULT["duration"],
        lambda v, conf, sec: actions.inject_timeouts(duration=v, configuration=conf, secrets=sec),
        _check_fault_with("duration"),
    ),
    Case(
        "latency_ms",
        FAULT["latency_ms"],
        lambda v, conf, sec: actions.inject_latency(v, configuration=conf, secrets=sec),
        _check_fault_with("latency_ms"),
    ),
    Case(
        "cells[0]",
        SERVER.cell_index,
        lambda v, conf, sec: actions.inject_errors(
            50, cells=[int(v)], configuration=conf, secrets=sec
        ),
        _check_fault_with("cells"),
    ),
    Case(
        "megabytes_per_second",
        PRESSURE["megabytes_per_second"],
        lambda v, conf, sec: actions.apply_memory_pressure(
            0, megabytes_per_second=v, configuration=conf, secrets=sec
        ),
        _check_pressure_with("megabytes_per_second"),
    ),
    Case(
        "duration",
        PRESSURE["duration"],
        lambda v, conf, sec: actions.apply_memory_pressure(
            0, duration=v, configuration=conf, secrets=sec
        ),
        _check_pressure_with("duration"),
    ),
    Case(
        "cell",
        SERVER.cell_index,
        lambda v, conf, sec: actions.apply_memory_pressure(int(v), configuration=conf, secrets=sec),
        _check_pressure_with("cell"),
    ),
    Case(
        "cell",
        SERVER.cell_index,
        lambda v, conf, sec: actions.kill_cell(int(v), configuration=conf, secrets=sec),
        lambda r: SERVER.check_index(
            r.path.split("/")[3] if isinstance(r, Recorded) else str(int(r))
        ),
    ),
    Case(
        "window",
        SERVER.seconds,
        lambda v, conf, sec: probes.goodput(window=v, configuration=conf, secrets=sec),
        _check_query("seconds", SERVER.seconds),
    ),
    Case(
        "window",
        SERVER.window,
        lambda v, conf, sec: probes.service_correlation(window=v, configuration=conf, secrets=sec),
        _check_query("window", SERVER.window),
    ),
    Case(
        "emergence_lease_seconds",
        c.lease_seconds_schema(),
        lambda v, conf, sec: actions.set_defenses(
            False, configuration={**conf, "emergence_lease_seconds": v}, secrets=sec
        ),
        _check_lease("/admin/defenses"),
    ),
    Case(
        "emergence_lease_seconds",
        c.lease_seconds_schema(),
        lambda v, conf, sec: actions.remove_all_jitter(
            configuration={**conf, "emergence_lease_seconds": v}, secrets=sec
        ),
        _check_lease("/admin/jitter"),
    ),
]


def _server_accepts(case: Case, value: float) -> bool:
    try:
        case.serve(value)
    except c.InvalidField:
        return False
    return True


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{i}-{case.argument}" for i, case in enumerate(CASES)]
)
def test_an_activity_accepts_exactly_what_the_service_accepts(
    case: Case, recorder: tuple[list[Recorded], dict[str, Any], dict[str, Any]]
) -> None:
    calls, configuration, secrets = recorder
    values = _near(case.schema)
    verdicts = {value: _server_accepts(case, value) for value in values}
    # Each bound is a real limit: the service accepts on one side and refuses on the other.
    assert True in verdicts.values() and False in verdicts.values(), verdicts
    name = case.argument.split("[")[0]
    for value, served in verdicts.items():
        calls.clear()
        try:
            case.call(value, configuration, secrets)
        except ActivityFailed as error:
            if served:
                assert calls, f"{case.argument}={value!r}: the service accepts it, got {error}"
            else:
                assert not calls, f"{case.argument}={value!r} was sent, the service refuses it"
                assert str(error).startswith(name), (value, str(error))
                continue
        else:
            assert served, f"{case.argument}={value!r}: accepted, the service refuses it"
        assert len(calls) == 1, calls
        case.serve(calls[0])  # the request as it reached the service passes its check


def test_the_contract_imports_the_standard_library_alone() -> None:
    """Both sides import it: the base install (no Starlette) and the services."""
    import subprocess
    import sys

    code = (
        "import sys; before = set(sys.modules); import chaosemergence.contract, "
        "chaosemergence.settings, chaosemergence.activity; "
        "loaded = {n.split('.')[0] for n in set(sys.modules) - before}; "
        "print(sorted(loaded - set(sys.stdlib_module_names)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout.replace("'", '"')))
    # chaoslib is the extension's own dependency; nothing of the reference system.
    assert "chaosemergence" in loaded
    assert not loaded & {"starlette", "uvicorn", "aiohttp", "prometheus_client", "psutil"}, loaded


@pytest.mark.parametrize("value", ["0", "-5", "abc", "nan", "inf", "1e99"])
def test_a_bad_caller_timeout_is_refused_naming_the_header(value: str) -> None:
    with pytest.raises(ValueError, match="X-Emergence-Timeout-Ms"):
        c.parse_caller_timeout(value)


def test_the_caller_timeout_is_read_in_seconds() -> None:
    assert c.parse_caller_timeout("600") == pytest.approx(0.6)
    assert c.parse_caller_timeout(None) is None
