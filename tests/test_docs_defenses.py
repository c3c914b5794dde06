"""docs/defenses.md: its Python examples run, and what it names exists in the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chaosemergence.app.switches import ALL_DEFENSES

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "defenses.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, flags=re.DOTALL)


PYTHON = _blocks("python")


def test_the_doc_has_examples() -> None:
    """The page shows the library at work, and the README links it."""
    assert len(PYTHON) >= 4 and _blocks("bash")
    assert "docs/defenses.md" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("source", PYTHON, ids=[f"example-{i}" for i in range(len(PYTHON))])
def test_python_example_runs(source: str) -> None:
    """Each Python example runs as written (its asserts are the checks)."""
    exec(compile(source, "docs/defenses.md", "exec"), {"__name__": "__docs__"})


def test_admin_paths_in_the_examples_exist() -> None:
    """Every admin path a shell example calls is a route of the gateway."""
    gateway = (ROOT / "chaosemergence" / "app" / "gateway.py").read_text()
    routes = set(re.findall(r'Route\("([^"]+)"', gateway))
    called = {p for block in _blocks("bash") for p in re.findall(r"8080(/admin/[a-z/-]+)", block)}
    assert called and called <= routes, called - routes


def test_the_switch_table_names_every_defense() -> None:
    """The switch table lists exactly the defenses the admin API knows."""
    section = DOC.split("## Switching defenses", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert named == set(ALL_DEFENSES)
    for block in _blocks("bash"):
        for names in re.findall(r'"names": \[([^\]]*)\]', block):
            assert set(re.findall(r'"([a-z_]+)"', names)) <= set(ALL_DEFENSES)


def test_the_metrics_it_names_are_exported() -> None:
    """Every metric in the table is defined by the reference system or the library."""
    section = DOC.split("## New metrics at a glance", 1)[1]
    names = re.findall(r"^\| `(emergence_[a-z_]+)`", section, flags=re.MULTILINE)
    # The reference system's own series, and those it shares with the library.
    source = (ROOT / "chaosemergence" / "app" / "metrics.py").read_text()
    source += (ROOT / "chaosemergence" / "defenses" / "_series.py").read_text()
    assert names
    for name in names:
        assert f'"{name.removesuffix("_total")}"' in source, name
