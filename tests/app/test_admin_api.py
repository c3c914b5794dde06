"""The published admin API against a real system: the document it serves, bad input answered
with a 4xx naming the field, oversized bodies refused, nothing half-applied, a bounded
schemathesis run (state-changing paths included) and the token checked on every path."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaosemergence.contract import MAX_BODY_BYTES
from tests.app.helpers import answered_state, problems
from tests.conftest import RunningSystem, start_system, stop_system

CELLS = 2


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    running = start_system(tmp_path_factory.mktemp("admin-api"), cells=CELLS)
    yield running
    stop_system(running)


@pytest.fixture
def clean(api: RunningSystem) -> RunningSystem:
    assert api.admin("POST", "/admin/reset").status_code == 200
    assert problems(api) == []
    return api


def document(system: RunningSystem) -> dict[str, Any]:
    answer = system.admin("GET", "/admin/openapi.json")
    assert answer.status_code == 200
    found: dict[str, Any] = answer.json()
    return found


def fingerprint(system: RunningSystem) -> dict[str, Any]:
    """What an admin call could change, read with the right token."""
    state = answered_state(system)
    return {
        "problems": problems(system),
        "lease": state["gateway"]["lease"]["held"],
        "cells": [
            (
                c["alive"],
                c["restarts"],
                (c["state"].get("memory") or {}).get("pressure") is not None,
            )
            for c in state["cells"]
        ],
        "gateway": (state["gateway"]["cellular_routing"], state["gateway"]["desired"]),
    }


def test_the_served_document_lists_every_admin_route(api: RunningSystem) -> None:
    """The document is served behind the token and names the kill and memory paths."""
    paths = document(api)["paths"]
    assert "/admin/cells/{index}/kill" in paths
    assert "/admin/cells/{index}/memory-pressure" in paths
    assert set(paths["/admin/faults"]) == {"post", "delete"}
    assert httpx.get(f"{api.admin_url}/admin/openapi.json", timeout=5).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/admin/faults", {"kind": "boom", "duration": 5}, "kind"),
        ("POST", "/admin/faults", {"kind": "error", "duration": -1}, "duration"),
        ("POST", "/admin/faults", "not json", "body"),
        ("POST", "/admin/faults", [1, 2], "body"),
        ("POST", "/admin/defenses", {"enabled": "off"}, "enabled"),
        ("POST", "/admin/defenses", {"enabled": False, "names": ["nope"]}, "names[0]"),
        ("POST", "/admin/jitter", {"enabled": False, "lease_seconds": 0}, "lease_seconds"),
        ("POST", "/admin/lease", {"seconds": "ten"}, "seconds"),
        ("POST", "/admin/cells/x/kill", None, "index"),
        ("POST", f"/admin/cells/{CELLS}/kill", None, "index"),
        ("POST", "/admin/cells/0/memory-pressure", {"duration": 5}, "megabytes_per_second"),
        ("POST", "/admin/metastable/resume", {"reason": ""}, "reason"),
        ("GET", "/admin/events?since=yesterday", None, "since"),
        ("GET", "/admin/increase?seconds=0", None, "seconds"),
        ("GET", "/admin/correlation?window=nan", None, "window"),
    ],
)
def test_bad_input_gets_a_4xx_naming_the_field(
    clean: RunningSystem, method: str, path: str, body: Any, field: str
) -> None:
    """400 with a JSON error naming the field, and nothing changed."""
    before = fingerprint(clean)
    content = body if isinstance(body, str) else None if body is None else json.dumps(body)
    answer = clean.admin(method, path, content=content)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert field.split("[")[0] in answer.json()["error"]
    assert fingerprint(clean) == before


def test_an_oversized_body_is_refused_before_anything_reads_it(clean: RunningSystem) -> None:
    """A body over the limit gets 413, by its Content-Length or (chunked) as it streams."""
    big = json.dumps({"kind": "error", "duration": 60, "pad": "x" * MAX_BODY_BYTES})
    answer = clean.admin("POST", "/admin/faults", content=big)
    assert answer.status_code == 413
    assert answer.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096].encode()

    streamed = clean.admin("POST", "/admin/faults", content=chunks())
    assert streamed.status_code == 413
    assert problems(clean) == []
    # Just under the limit is read (and judged on its fields).
    small = json.dumps({"kind": "error", "duration": 60, "pad": "x" * (MAX_BODY_BYTES - 100)})
    assert clean.admin("POST", "/admin/faults", content=small).status_code == 201


def test_a_fault_naming_one_bad_cell_changes_no_cell(clean: RunningSystem) -> None:
    """[0, 99]: refused as a whole; cell 0, which alone was valid, gets no fault."""
    body = {"kind": "error", "duration": 60, "cells": [0, 99]}
    answer = clean.admin("POST", "/admin/faults", json=body)
    assert answer.status_code == 400
    assert answer.json()["field"] == "cells[1]"
    assert problems(clean) == []
    # The same request without the bad cell does reach cell 0 (the check above can fail).
    assert clean.admin("POST", "/admin/faults", json={**body, "cells": [0]}).status_code == 201
    found = problems(clean)
    assert len(found) == 1 and found[0].startswith("cell 0: faults"), found


def test_schemathesis_finds_no_5xx_and_no_violation_of_the_document(
    clean: RunningSystem, tmp_path: Path
) -> None:
    """A bounded schemathesis run (8 examples per operation and phase, 180 s at most; every
    phase, every check but positive-data acceptance:
    a cell the run killed refuses memory pressure with a documented 409) over every path,
    kill and memory pressure included, against this throwaway system."""
    st = Path(sys.executable).parent / "st"
    command = [
        str(st),
        "run",
        f"{clean.admin_url}/admin/openapi.json",
        "--header",
        f"Authorization: Bearer {clean.token}",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        "8",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "40",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=180, cwd=tmp_path, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    # It did reach the state-changing paths.
    junit = next(tmp_path.rglob("*.xml")).read_text()
    assert "/admin/cells/{index}/kill" in junit
    assert "/admin/cells/{index}/memory-pressure" in junit


# A valid, weakening request for every operation: without the token none may take effect.
WEAKENING: dict[tuple[str, str], Any] = {
    ("post", "/admin/faults"): {"kind": "error", "duration": 60},
    ("post", "/admin/defenses"): {"enabled": False},
    ("post", "/admin/jitter"): {"enabled": False},
    ("post", "/admin/cells/{index}/kill"): None,
    ("post", "/admin/cells/{index}/memory-pressure"): {"megabytes_per_second": 1, "duration": 60},
    ("post", "/admin/lease"): {"seconds": 60},
    ("post", "/admin/metastable/resume"): {},
}
# The cells' internal admin paths (app/cell_app.py), called with the cells' own token.
CELL_PATHS = [
    ("POST", "/admin/faults", {"kind": "error", "duration": 60}),
    ("DELETE", "/admin/faults", None),
    ("POST", "/admin/cache/invalidate", None),
    ("POST", "/admin/jitter", {"enabled": False}),
    ("POST", "/admin/defenses", {"enabled": False}),
    ("POST", "/admin/reset", None),
    ("POST", "/admin/memory-pressure", {"megabytes_per_second": 1, "duration": 60}),
    ("POST", "/admin/signals", {"correlation": 1.0}),
    ("GET", "/admin/metastable", None),
    ("POST", "/admin/metastable/resume", {}),
    ("GET", "/admin/state", None),
    ("GET", "/admin/events", None),
    ("GET", "/admin/increase", None),
    ("POST", "/admin/payments/missing", {"keys": ["a"]}),
    ("GET", "/admin/process", None),
]


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no token", "wrong token"])
def test_every_path_answers_401_without_the_token_and_changes_nothing(
    clean: RunningSystem, token: str | None
) -> None:
    """Every operation of the published document (on the admin listener and relayed through
    the main port), every internal cell path and the shared dependency's internal path."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    state = clean.admin("GET", "/admin/state").json()
    before = fingerprint(clean)
    calls: list[tuple[str, str, Any]] = []
    for path, methods in document(clean)["paths"].items():
        for method in methods:
            body = WEAKENING.get((method, path))
            concrete = path.replace("{index}", "0")
            calls += [
                (method, f"{clean.admin_url}{concrete}", body),
                (method, f"{clean.url}{concrete}", body),
            ]
    for cell in state["cells"]:
        calls += [(m, f"{cell['url']}{p}", b) for m, p, b in CELL_PATHS]
    calls.append(("POST", f"{clean.url}/internal/shared/0", None))
    answered = {}
    for method, url, body in calls:
        answer = httpx.request(method, url, json=body, headers=headers, timeout=10)
        answered[f"{method.upper()} {url}"] = answer.status_code
    refused = {call: status for call, status in answered.items() if status != 401}
    assert refused == {}
    assert len(answered) >= 2 * 21 + CELLS * len(CELL_PATHS)
    assert fingerprint(clean) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/admin/faults", {"kind": "boom", "duration": 5}, "kind"),
        ("POST", "/admin/memory-pressure", {"duration": 5}, "megabytes_per_second"),
        ("POST", "/admin/payments/missing", {"keys": 5}, "keys"),
        ("POST", "/admin/signals", {"correlation": 2}, "correlation"),
        ("GET", "/admin/events?since=x", None, "since"),
        ("GET", "/admin/increase?seconds=-1", None, "seconds"),
    ],
)
def test_the_cells_internal_paths_refuse_bad_input_with_a_4xx(
    clean: RunningSystem, method: str, path: str, body: Any, field: str
) -> None:
    """The cells' own admin paths (the gateway calls them) answer bad input with 400."""
    cell = clean.admin("GET", "/admin/state").json()["cells"][0]["url"]
    headers = {"Authorization": f"Bearer {clean.token}"}
    answer = httpx.request(method, f"{cell}{path}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]
    assert problems(clean) == []
