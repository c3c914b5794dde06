"""`python -m chaosemergence.weekly`: a red week's issue names the experiment, mode and probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosemergence.weekly import ISSUE_TITLE, issue_body, main, wrong_verdicts
from tests.test_report import (
    P99,
    RADIUS,
    action,
    activation,
    journal,
    probe_run,
    state,
    stopped,
    write,
)

SPECS = [P99, RADIUS]
RUN_URL = "https://github.com/owner/repo/actions/runs/7"


def held(*, activated: bool = True, p99: float = 170.0) -> dict[str, object]:
    return journal(
        SPECS,
        state(probe_run(P99, 160.0), probe_run(RADIUS, 0.0)),
        state(probe_run(P99, p99), probe_run(RADIUS, 0.0)),
        method=[action(), activation(["circuit_breaker", "retry_budget"], failed=not activated)],
    )


def deviated() -> dict[str, object]:
    return journal(
        SPECS,
        state(probe_run(P99, 160.0), probe_run(RADIUS, 0.0)),
        stopped(probe_run(P99, 1979.06)),
        deviated=True,
        method=[action(), activation(["circuit_breaker"], failed=True)],
    )


def green(results: Path, experiment: str) -> None:
    """The three right verdicts: on held and activated, off deviated on p99, cut held."""
    write(results, experiment, "on", held())
    write(results, experiment, "off", deviated())
    write(results, experiment, "cut", held(activated=False))


def test_a_green_week_has_no_wrong_verdict(tmp_path: Path) -> None:
    green(tmp_path, "retry-storm")
    assert wrong_verdicts(tmp_path, ["retry-storm"]) == []


def test_each_wrong_verdict_names_its_mode_and_probe(tmp_path: Path) -> None:
    """on not activated, off held, cut deviated, and an experiment with no journal at all."""
    write(tmp_path, "retry-storm", "on", held(activated=False))
    write(tmp_path, "retry-storm", "off", held())
    write(tmp_path, "retry-storm", "cut", deviated())
    green(tmp_path, "cascade")
    wrong = {(w.experiment, w.mode): w for w in wrong_verdicts(tmp_path, ["retry-storm", "herd"])}
    assert set(wrong) == {
        ("retry-storm", "on"),
        ("retry-storm", "off"),
        ("retry-storm", "cut"),
        ("herd", "on"),
        ("herd", "off"),
        ("herd", "cut"),
    }
    on = wrong[("retry-storm", "on")]
    assert on.why == "did not hold with the defenses on"
    assert on.probes == [
        "`defenses-activated` (check_defense_activation) failed: check_defense_activation: "
        "retry_budget did not activate since 1795980237 (activated: circuit_breaker)"
    ]
    assert on.journal == "journal-retry-storm-on.json"
    off = wrong[("retry-storm", "off")]
    assert off.why.startswith("no harm probe failed after the method")
    assert off.probes == [
        "harm probes that held after the method: `p99-latency-ms` (latency_percentile): 170, "
        "tolerance 0 .. 1000; `failure-radius` (measure_failure_radius): 0, tolerance 0 .. 10"
    ]
    cut = wrong[("retry-storm", "cut")]
    # The failed activation check is expected with the defenses off: only the harm is named.
    assert cut.probes == [
        "`p99-latency-ms` (after the method, latency_percentile): 1979, tolerance 0 .. 1000"
    ]
    assert wrong[("herd", "off")].why.startswith("no journal")


def test_the_issue_body_links_the_run_and_says_how_to_reproduce(tmp_path: Path) -> None:
    write(tmp_path, "retry-storm", "on", held())
    write(tmp_path, "retry-storm", "off", held(p99=250.0))
    write(tmp_path, "retry-storm", "cut", held())
    body = issue_body(wrong_verdicts(tmp_path, ["retry-storm"]), RUN_URL)
    assert f"[{RUN_URL}]({RUN_URL})" in body
    assert (
        "| `retry-storm` | off | deviates on a harm probe | no harm probe failed after the "
        "method (failed: none) | harm probes that held after the method: `p99-latency-ms` "
        "(latency_percentile): 250, tolerance 0 .. 1000;"
    ) in body
    assert "### `retry-storm`, defenses off (`--var defenses=off`)" in body
    assert "- reproduce: `.ci/weekly.sh retry-storm weekly off`" in body
    assert "`retry-storm-off/` of the artifact `weekly-retry-storm`" in body
    assert "| `retry-storm` | on |" not in body and "| `retry-storm` | cut |" not in body


@pytest.mark.parametrize(
    ("broken", "job_result", "expected"),
    [
        (False, "success", "green"),
        (True, "failure", "red"),
        (False, "failure", "red"),  # a job died after writing good journals: still red
        (False, "cancelled", "red"),
    ],
)
def test_main_writes_the_issue_only_on_a_red_week(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    broken: bool,
    job_result: str,
    expected: str,
) -> None:
    results, out = tmp_path / "results", tmp_path / "issue"
    green(results, "retry-storm")
    if broken:
        write(results, "retry-storm", "cut", deviated())
    out.mkdir()
    (out / "body.md").write_text("a stale body from an earlier week\n")
    args = [str(results), "--experiments", json.dumps(["retry-storm"]), "--run-url", RUN_URL]
    assert main([*args, "--job-result", job_result, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == expected
    if expected == "green":
        assert not (out / "body.md").exists() and not (out / "title.txt").exists()
        return
    assert (out / "title.txt").read_text() == ISSUE_TITLE + "\n"
    body = (out / "body.md").read_text()
    assert RUN_URL in body
    if broken:
        assert "| `retry-storm` | cut |" in body
    else:
        assert f"a job ended `{job_result}`" in body


def test_main_without_results_is_red_for_every_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No artifact at all (every job died early): every expected run is missing."""
    args = ["--experiments", '["retry-storm"]', "--run-url", RUN_URL, "--out", str(tmp_path / "i")]
    assert main([str(tmp_path / "absent"), *args, "--job-result", "failure"]) == 0
    assert capsys.readouterr().out.strip() == "red"
    body = (tmp_path / "i" / "body.md").read_text()
    assert all(f"| `retry-storm` | {mode} |" in body for mode in ("on", "off", "cut"))
