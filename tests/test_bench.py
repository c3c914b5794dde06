"""`make bench`'s record: figures against anchors, goals, the file's shape, comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from chaosemergence.bench.cli import main
from chaosemergence.bench.hello import app
from chaosemergence.bench.record import (
    FIELDS,
    SCHEMA,
    Record,
    compare,
    format_comparison,
    format_table,
    load,
)
from chaosemergence.bench.wrk import parse, run_wrk

# A report of wrk 4.1 (Debian) run with --latency, as it prints it.
WRK_REPORT = """\
Running 5s test @ http://127.0.0.1:40001
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.72ms    5.84ms 115.67ms   95.25%
    Req/Sec     4.04k     1.18k    6.53k    71.25%
  Latency Distribution
     50%    3.17ms
     75%    4.92ms
     90%    7.10ms
     99%    1.28s
  20000 requests in 5.00s, 6.32MB read
  Socket errors: connect 0, read 1, write 0, timeout 15
  Non-2xx or 3xx responses: 500
Requests/sec:   4000.00
Transfer/sec:      1.26MB
"""


def test_ratio_is_value_over_its_anchor_and_goal_decides_met() -> None:
    """A figure's ratio divides by the anchor measured in the same run; the goal judges it."""
    record = Record()
    record.add("service", "off", 1000.0, "req/s")
    held = record.add("service", "on", 950.0, "req/s", anchor="service/off", goal="ratio >= 0.9")
    missed = record.add("service", "on2", 800.0, "req/s", anchor="service/off", goal="ratio >= 0.9")
    assert held.ratio == pytest.approx(0.95) and held.met is True
    assert missed.ratio == pytest.approx(0.8) and missed.met is False


def test_value_goal_and_unmeasured_figures() -> None:
    """A goal on the value; a figure that could not be measured has no ratio and no verdict."""
    record = Record()
    assert record.add("p", "computations", 1.0, "n", goal="value <= 1").met is True
    assert record.add("p", "computations2", 2.0, "n", goal="value <= 1").met is False
    record.add("p", "absent", None, "us")
    unmeasured = record.add("p", "x", float("nan"), "us", anchor="p/absent", goal="ratio < 2")
    assert (unmeasured.value, unmeasured.ratio, unmeasured.met) == (None, None, None)
    against_missing = record.add("p", "y", 3.0, "us", anchor="p/absent", goal="ratio < 2")
    assert (against_missing.ratio, against_missing.met) == (None, None)


def test_bad_anchor_and_goal_are_refused_by_name() -> None:
    """An anchor not measured yet, or a goal that does not parse, is an error naming it."""
    record = Record()
    with pytest.raises(KeyError, match="service/nope"):
        record.add("service", "a", 1.0, "req/s", anchor="service/nope")
    with pytest.raises(ValueError, match="goal must read"):
        record.add("service", "b", 1.0, "req/s", goal="ratio about 1")
    with pytest.raises(ValueError, match="cannot hold '/'"):
        record.add("service", "c/d", 1.0, "req/s")


def test_file_shape_is_section_figure_six_fields(tmp_path: Path) -> None:
    """The written file: schema, machine, and section -> figure -> exactly the six fields."""
    record = Record()
    record.add("service", "off", 1000.0, "req/s")
    record.add("service", "on", 950.0, "req/s", anchor="service/off", goal="ratio >= 0.9")
    path = tmp_path / "bench-results.json"
    record.write(path, "python -m chaosemergence.bench")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert data["machine"]["cpus"] >= 1
    assert data["sections"]["service"]["on"] == {
        "value": 950.0,
        "unit": "req/s",
        "anchor": "service/off",
        "ratio": 0.95,
        "goal": "ratio >= 0.9",
        "met": True,
    }
    assert load(path) == data["sections"]
    data["sections"]["service"]["on"]["extra"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"service/on must have exactly"):
        load(path)
    assert set(FIELDS) == {"value", "unit", "anchor", "ratio", "goal", "met"}


def test_table_lists_every_figure_with_its_verdict() -> None:
    """The printed table carries each figure, its ratio and whether its goal was met."""
    record = Record()
    record.add("service", "off", 1000.0, "req/s")
    record.add("service", "on", 800.0, "req/s", anchor="service/off", goal="ratio >= 0.9")
    table = format_table(record.as_json("x")["sections"])
    line = next(line for line in table.splitlines() if line.strip().startswith("on "))
    assert "800" in line and "0.8" in line and "ratio >= 0.9" in line and line.endswith("NO")


def test_compare_sets_old_beside_new_and_marks_goals_that_flipped(tmp_path: Path) -> None:
    """--compare OLD NEW: the relative change of each figure; a goal now missed is marked."""
    old, new = Record(), Record()
    for record, on in ((old, 950.0), (new, 700.0)):
        record.add("service", "off", 1000.0, "req/s")
        record.add("service", "on", on, "req/s", anchor="service/off", goal="ratio >= 0.9")
    new.add("service", "added", 1.0, "x")
    changes = {c.path: c for c in compare(old.as_json("")["sections"], new.as_json("")["sections"])}
    assert changes["service/on"].change == pytest.approx(700 / 950 - 1)
    assert changes["service/added"].old is None
    text = format_comparison(list(changes.values()))
    assert "now missed" in next(line for line in text.splitlines() if "service/on " in line)
    old.write(tmp_path / "old.json", "a")
    new.write(tmp_path / "new.json", "b")
    assert main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    assert main(["--compare", str(tmp_path / "missing.json"), str(tmp_path / "new.json")]) == 2


def test_wrk_report_is_read_as_goodput_and_latencies() -> None:
    """Requests, duration, non-2xx, socket errors and p50/p99 (units converted to ms)."""
    result = parse(WRK_REPORT)
    assert (result.requests, result.seconds, result.non_2xx) == (20000, 5.0, 500)
    assert result.socket_errors == 16
    assert (result.p50_ms, result.p99_ms) == (3.17, 1280.0)
    assert result.goodput == pytest.approx((20000 - 500) / 5.0)
    with pytest.raises(ValueError, match="no 99% latency"):
        parse(WRK_REPORT.replace("     99%    1.28s\n", ""))


def test_wrk_drives_loopback_only() -> None:
    """The load generator is never pointed at another host."""
    with pytest.raises(ValueError, match="loopback only"):
        run_wrk("http://example.com", connections=1, seconds=1)


async def test_hello_world_answers_every_path() -> None:
    """The anchor app: 200 with a fixed JSON body, whatever the path."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hello") as client:
        answer = await client.get("/users/1/profile")
    assert answer.status_code == 200 and answer.json() == {"hello": "world"}


def test_bench_settings_are_valid_overrides() -> None:
    """The service bench's sizing is accepted by `serve --config` (a renamed field fails)."""
    from chaosemergence.app.overrides import apply_overrides
    from chaosemergence.app.settings import SystemSettings
    from chaosemergence.bench.service import BENCH_SETTINGS

    settings = apply_overrides(SystemSettings(), BENCH_SETTINGS)
    assert settings.dependencies["recommendations"].service_time_ms == 1.0
    assert settings.cell_request_capacity == BENCH_SETTINGS["cell_request_capacity"]


async def test_guarded_call_goes_through_breaker_throttle_retry_and_budget() -> None:
    """The composed call the primitives section times: every defense sees the call."""
    from chaosemergence.bench.primitives import guarded
    from chaosemergence.defenses import AdaptiveThrottle, CircuitBreaker, RetryBudget, RetryPolicy

    breaker, throttle = CircuitBreaker("t"), AdaptiveThrottle()
    budget = RetryBudget(ratio=1.0)
    retry = RetryPolicy(max_attempts=3, budget=budget, sleep=_no_sleep)
    failures = [RuntimeError("first attempt fails")]

    async def flaky() -> int:
        if failures:
            raise failures.pop()
        return 7

    assert await guarded(breaker, throttle, retry)(flaky) == 7
    assert breaker.calls == 1
    assert (retry.attempts, retry.retries) == (2, 1)
    assert budget.allowed == 1
    assert (throttle.snapshot()["requests"], throttle.snapshot()["accepts"]) == (1, 1)


async def _no_sleep(_: float) -> None:
    return None


def test_scale_sizes_must_be_ascending_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """`--sizes` names the field when the cell counts are not ascending integers >= 1."""
    for bad in ("4,1", "0,4", "a,b"):
        with pytest.raises(SystemExit) as exit_:
            main(["--only", "scale", "--sizes", bad])
        assert exit_.value.code == 2
        assert "--sizes" in capsys.readouterr().err


def test_unknown_section_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "scael"])
    assert "unknown ['scael']" in capsys.readouterr().err
