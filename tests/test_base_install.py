"""Issue 11, done when: `pip install chaostoolkit-emergence` (no extras) into a fresh
virtualenv runs `chaos discover` and uses the library, with no Starlette, uvicorn, aiohttp,
Locust, gevent, rich, prometheus_client, psutil or pytest installed.

A real virtualenv and a real `pip install` of this tree (from the package registry, as CI
and users reach it); about half a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = (
    "starlette",
    "uvicorn",
    "aiohttp",
    "locust",
    "gevent",
    "rich",
    "pytest",
    "prometheus-client",
    "psutil",
)
# The base install measured (docs/decisions.md, issue 11): 20 distributions; a little room
# for a dependency's own new dependency, none for an extra.
MAX_DISTRIBUTIONS = 24
USE = """
import asyncio, importlib.util, sys
before = set(sys.modules)
import chaosemergence.defenses as d
import chaosemergence.defenses.control, chaosemergence.defenses.detect
import chaosemergence.defenses.metrics as m
loaded = {n.split(".")[0] for n in set(sys.modules) - before}
assert loaded - set(sys.stdlib_module_names) == {"chaosemergence"}, loaded

async def double(x):
    return 2 * x

assert asyncio.run(d.Guard(breaker=d.CircuitBreaker("x")).call(double, 21)) == 42
try:
    m.PrometheusRecorder
except ImportError as error:
    assert "[prometheus]" in str(error), error
else:
    raise AssertionError("PrometheusRecorder without prometheus_client")
import chaosemergence.actions, chaosemergence.probes, chaosemergence.rollbacks
print("used")
"""


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_base_install_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
            "node_modules", "artifacts", "results",
        ),
    )  # fmt: skip
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / "bin"
    installed = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(source)], tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]

    listed = _run([str(bin_dir / "python"), "-m", "pip", "list", "--format=json"], tmp_path)
    names = {p["name"].lower() for p in json.loads(listed.stdout)} - {"pip", "setuptools"}
    assert "chaostoolkit-emergence" in names
    assert not names & set(HEAVY), names & set(HEAVY)
    assert len(names) <= MAX_DISTRIBUTIONS, sorted(names)

    used = _run([str(bin_dir / "python"), "-c", USE], tmp_path)
    assert used.returncode == 0 and used.stdout.strip() == "used", used.stderr[-3000:]

    discovery = tmp_path / "discovery.json"
    discovered = _run(
        [
            str(bin_dir / "chaos"), "--no-version-check", "discover", "--no-system-info",
            "--no-install", "chaostoolkit-emergence", "--discovery-path", str(discovery),
        ],
        tmp_path,
    )  # fmt: skip
    assert discovered.returncode == 0, discovered.stderr[-3000:]
    activities = json.loads(discovery.read_text())["activities"]
    modules = {a["mod"] for a in activities}
    assert {"chaosemergence.actions", "chaosemergence.probes"} <= modules, modules

    serve = _run([str(bin_dir / "chaosemergence"), "serve", "--port", "9"], tmp_path)
    assert serve.returncode == 2 and "chaostoolkit-emergence[reference]" in serve.stderr
