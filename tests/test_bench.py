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


def _journal(
    folder: Path,
    experiment: str,
    mode: str,
    *,
    start: str = "2026-11-29T23:00:00+00:00",
    duration: float = 40.0,
    figures: dict[str, float] | None = None,
    probes: dict[str, float] | None = None,
) -> None:
    """A journal as chaos writes it, with the method probes the bench reads."""

    def probe(name: str, output: object) -> dict[str, object]:
        activity = {"type": "probe", "name": name, "provider": {"type": "python", "func": name}}
        return {"activity": activity, "status": "succeeded", "output": output}

    run = [probe(name, value) for name, value in (probes or {}).items()]
    run.append(probe("figures", figures or {}))
    folder.mkdir(parents=True, exist_ok=True)
    journal = {
        "status": "completed",
        "deviated": False,
        "start": start,
        "duration": duration,
        "experiment": {"title": experiment, "steady-state-hypothesis": {"probes": []}},
        "steady_states": {},
        "run": run,
    }
    (folder / f"journal-{experiment}-{mode}.json").write_text(json.dumps(journal))
    (folder / f"run-{experiment}-{mode}.json").write_text(
        json.dumps({"experiment": experiment, "profile": "ci", "mode": mode})
    )


def test_effectiveness_reads_the_latest_journals_against_the_undefended_run(
    tmp_path: Path,
) -> None:
    """Each figure from the defended run, anchored on the undefended one; goals judged."""
    from chaosemergence.bench.journals import effectiveness_section, load_latest

    old, new = tmp_path / "old", tmp_path / "new"
    _journal(old, "retry-storm", "on", figures={"p99_ms": 900.0}, probes={})
    _journal(
        new,
        "retry-storm",
        "on",
        start="2026-11-30T01:00:00+00:00",
        figures={"p99_ms": 200.0},
        probes={"retry-amplification": 0.5},
    )
    _journal(new, "retry-storm", "off", figures={"p99_ms": 2000.0})
    _journal(new, "cascade", "on", figures={"failure_radius_pct": 30.0})
    _journal(new, "metastable", "on", probes={"recovery-seconds": 45.0})
    record = Record()
    effectiveness_section(record, load_latest([old, new]))
    p99 = record.get("effectiveness/p99_ms_20pct_timeouts")
    assert (p99.value, p99.ratio, p99.met) == (200.0, 0.1, True)
    assert record.get("effectiveness/retry_amplification").met is True
    # The CI profile's four cells: one cell's share plus a point.
    radius = record.get("effectiveness/failure_radius_one_cell_down")
    assert (radius.value, radius.goal, radius.met) == (0.3, "value <= 0.26", False)
    assert record.get("effectiveness/metastable_recovery_s").met is False
    missing = record.get("effectiveness/correlation_after_defense")
    assert (missing.value, missing.met) == (None, None)


def test_experience_sums_the_journals_of_the_defended_set(tmp_path: Path) -> None:
    from chaosemergence.bench.journals import experience_section, load_latest

    _journal(tmp_path, "validate-emergence-defenses", "on", duration=42.0)
    _journal(tmp_path, "cascade", "on", duration=40.0)
    _journal(tmp_path, "cascade", "off", duration=50.0)
    record = Record()
    experience_section(record, load_latest([tmp_path]), {"make_run_s": 95.0})
    assert record.get("experience/flagship_journal_s").met is True
    assert record.get("experience/make_run_s").met is False
    assert record.get("experience/ci_set_on_journals_s").value == 82.0
    assert record.get("experience/ci_all_modes_journals_s").value == 132.0
    assert record.get("experience/ci_set_s").value is None


def test_sections_past_the_budget_are_skipped_and_the_file_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole bench is bounded: once --budget is spent the remaining sections are skipped."""
    out = tmp_path / "bench.json"
    assert main(["--only", "primitives", "--budget", "0", "--output", str(out)]) == 0
    assert load(out) == {}
    assert "primitives section skipped: the 0 s budget is spent" in capsys.readouterr().err
