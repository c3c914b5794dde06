"""How a cell process and its supervisor talk about its life: exit codes and files.

A cell that asks for a graceful restart (predictive restart) drains and exits with
``RESTART_EXIT_CODE``; the supervisor restarts it on the same socket. A cell that reaches
its memory limit writes an exit marker, then SIGKILLs itself as the OOM killer would; the
supervisor reads the marker to say why it died, and leaves it dead. Each cell appends its
defense events to a file, so the events of a process that exited stay readable.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RESTART_EXIT_CODE", "events_file", "exit_marker"]

# EX_TEMPFAIL: "try again", the cell wants to be started again.
RESTART_EXIT_CODE = 75


def exit_marker(run_dir: Path, index: int) -> Path:
    """Where cell ``index`` says why it is about to die."""
    return run_dir / f"cell-{index}.exit"


def events_file(run_dir: Path, index: int) -> Path:
    """Where cell ``index`` appends its defense events (JSON lines)."""
    return run_dir / f"cell-{index}.events.jsonl"
