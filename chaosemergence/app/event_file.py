"""A cell's defense events on disk, so those of a process that exited stay readable."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from chaosemergence.defenses import DefenseEvent

__all__ = ["EventFile"]

logger = logging.getLogger("chaosemergence.cell")


class EventFile:
    """JSON lines, appended as events are recorded; read back (the newest ``keep``) at start."""

    def __init__(self, path: Path, keep: int) -> None:
        self.path = path
        self.keep = keep

    def load(self) -> list[dict[str, Any]]:
        """The events earlier processes recorded (unreadable lines are skipped)."""
        try:
            lines = self.path.read_text().splitlines()[-self.keep :]
        except OSError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and isinstance(event.get("at"), int | float):
                    events.append(event)
        return events

    def append(self, event: DefenseEvent) -> None:
        """Add one event (an EventLog listener; a disk error is logged, never raised)."""
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(event.as_dict(), default=str) + "\n")
        except OSError:
            logger.exception("cannot persist a defense event to %s", self.path)
