"""Issue 11: the base install is the activities and the defense library, nothing heavier.

Each test runs a fresh interpreter, so what it imports is what a user's process would.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the base install must not pull in (the reference system, Locust, the test tools).
HEAVY = ("starlette", "uvicorn", "aiohttp", "locust", "gevent", "rich", "pytest", "psutil")
# Import names: a process with these blocked behaves as one on a base install.
BLOCKED_IMPORTS = (*HEAVY, "prometheus_client")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def _blocked(code: str) -> str:
    """`code` run with the heavy modules made unimportable (as if not installed)."""
    return "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in BLOCKED_IMPORTS) + code


def test_defenses_import_with_the_standard_library_alone() -> None:
    """Importing the library and its namespaces loads nothing outside the stdlib."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import chaosemergence.defenses, chaosemergence.defenses.detect\n"
        "import chaosemergence.defenses.control, chaosemergence.defenses.metrics\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'chaosemergence'}))\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_base_dependencies_leave_out_the_heavy_ones() -> None:
    """pyproject's base dependencies name none of the reference system's, Locust's or tests'."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = [d.split(">")[0].split("=")[0].split("[")[0].lower() for d in project["dependencies"]]
    for heavy in (*HEAVY, "uvicorn", "prometheus-client", "hypothesis", "mypy", "ruff"):
        assert heavy not in base, heavy
    extras = project["optional-dependencies"]
    assert any(d.startswith("starlette") for d in extras["reference"])
    assert any(d.startswith("locust") for d in extras["traffic"])
    assert any(d.startswith("prometheus-client") for d in extras["prometheus"])
    assert any("[reference,traffic,prometheus]" in d for d in extras["test"])


def test_installed_metadata_agrees() -> None:
    """The installed distribution's metadata (what a wheel carries) has the same base."""
    from importlib.metadata import requires

    unconditional = [r for r in requires("chaostoolkit-emergence") or [] if "extra ==" not in r]
    names = {r.split(";")[0].split(">")[0].split("[")[0].strip().lower() for r in unconditional}
    assert names, "no base requirements read"
    assert not names & {"starlette", "uvicorn", "aiohttp", "locust", "pytest", "rich"}, names


def test_the_activities_import_without_the_extras() -> None:
    """actions, probes, rollbacks and the controls import with the heavy modules unavailable."""
    code = _blocked(
        "import chaosemergence.actions, chaosemergence.probes, chaosemergence.rollbacks\n"
        "import chaosemergence.controls.reference_system, chaosemergence.controls.traffic\n"
        "import chaosemergence.controls.recorder, chaosemergence.controls.safeguard\n"
        "print('ok')\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("command", ["serve", "dashboard"])
def test_cli_names_the_missing_extra(command: str) -> None:
    """`chaosemergence serve|dashboard` without the reference extra exits 2 and says which."""
    argv = [command, "--once"] if command == "dashboard" else [command]
    code = _blocked(f"from chaosemergence.cli import main\nsys.exit(main({argv!r}))\n")
    result = _run(code)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "chaostoolkit-emergence[reference]" in result.stderr, result.stderr


def test_reference_control_names_the_missing_extra(tmp_path: Path) -> None:
    """The reference_system control refuses to start the system without the extra, naming it."""
    code = _blocked(
        "from chaoslib.exceptions import InterruptExecution\n"
        "from chaosemergence.controls.reference_system import start_reference_system\n"
        "from chaosemergence.settings import ExtensionSettings\n"
        f"s = ExtensionSettings.from_chaos({{'emergence_url': 'http://127.0.0.1:9', "
        f"'emergence_state_dir': {str(tmp_path)!r}}}, None)\n"
        "try:\n"
        "    start_reference_system(s, 2, 7)\n"
        "except InterruptExecution as e:\n"
        "    print(e)\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "chaostoolkit-emergence[reference]" in result.stdout, result.stdout
