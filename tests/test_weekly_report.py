"""The weekly run writes the HTML report of its modes, and the workflow links it from the job
summaries (stub chaos and prometheus, as in tests/test_weekly.py)."""

from __future__ import annotations

from pathlib import Path

from tests.test_weekly import (
    FLAGSHIP,
    Stub,
    run_step,
    run_weekly,
    step_running,
    stub,
    workflow,
)

__all__ = ["stub"]  # the fixture, used by name


def test_weekly_writes_one_report_of_its_modes(stub: Stub) -> None:
    out, _, _ = run_weekly(stub, FLAGSHIP, "ci")
    assert out.returncode == 0, out.stderr
    report = stub.results / f"report-{FLAGSHIP}.html"
    assert f"report: {report}" in out.stderr
    page = report.read_text()
    for label in ("defenses on", "defenses off", "loop cut"):
        assert f"{label} (journal-{FLAGSHIP}-" in page
    assert "The defenses are proven" in page


def test_a_failed_report_does_not_change_the_week(stub: Stub) -> None:
    out, _, _ = run_weekly(stub, FLAGSHIP, "ci", "on", STUB_JOURNAL="none")
    assert out.returncode == 1  # the missing journal is the wrong verdict; no report, no crash
    assert not (stub.results / f"report-{FLAGSHIP}.html").exists()


def test_experiment_job_links_its_report_from_the_summary(tmp_path: Path) -> None:
    job = workflow()["jobs"]["experiment"]
    step = step_running(job, lambda run: "report-$EXPERIMENT.html" in run)
    assert step["if"] == "always()"
    assert step["env"] == {"ARTIFACT_URL": "${{ steps.upload.outputs.artifact-url }}"}
    upload = next(s for s in job["steps"] if s.get("id") == "upload")
    assert job["steps"].index(upload) < job["steps"].index(step)
    results = tmp_path / "results"
    results.mkdir()
    (results / f"report-{FLAGSHIP}.html").write_text("<html></html>")
    summary = tmp_path / "summary.md"
    env = {
        "PATH": "/usr/bin:/bin",
        "RESULTS_DIR": "results",
        "EXPERIMENT": FLAGSHIP,
        "ARTIFACT_URL": "https://example.invalid/artifacts/1",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = run_step(step, tmp_path, env)
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert f"`report-{FLAGSHIP}.html`" in text
    assert f"[weekly-{FLAGSHIP}](https://example.invalid/artifacts/1)" in text


def test_report_job_uploads_and_lists_every_report(tmp_path: Path) -> None:
    job = workflow()["jobs"]["report"]
    upload = next(s for s in job["steps"] if s.get("id") == "upload-report")
    assert "results/report-*.html" in upload["with"]["path"].split()
    step = step_running(job, lambda run: "results/report-*.html" in run)
    assert job["steps"].index(upload) < job["steps"].index(step)
    results = tmp_path / "results"
    results.mkdir()
    for name in ("cascade", FLAGSHIP):
        (results / f"report-{name}.html").write_text("<html></html>")
    summary = tmp_path / "summary.md"
    env = {
        "PATH": "/usr/bin:/bin",
        "ARTIFACT_URL": "https://example.invalid/artifacts/2",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    done = run_step(step, tmp_path, env)
    assert done.returncode == 0, done.stderr
    text = summary.read_text()
    assert "(https://example.invalid/artifacts/2)" in text
    assert "- `report-cascade.html`" in text and f"- `report-{FLAGSHIP}.html`" in text
