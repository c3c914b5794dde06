"""Print a journal's verdict: `python -m chaosemergence.verdict journal.json` (exit 1 if not OK)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["summarize"]


def summarize(journal: dict[str, Any]) -> tuple[bool, list[str]]:
    """(ok, lines): ok when completed, not deviated, both steady states met, no activity failed."""
    states = journal.get("steady_states") or {}
    before = (states.get("before") or {}).get("steady_state_met")
    after = (states.get("after") or {}).get("steady_state_met")
    failed = [
        r["activity"]["name"] for r in journal.get("run", []) if r.get("status") != "succeeded"
    ]
    ok = (
        journal.get("status") == "completed"
        and not journal.get("deviated")
        and bool(before)
        and bool(after)
        and not failed
    )
    lines = [
        f"experiment: {journal.get('experiment', {}).get('title')}",
        f"status: {journal.get('status')}  deviated: {journal.get('deviated')}",
        f"steady state before: {before}  after: {after}",
    ]
    for phase in ("before", "after"):
        for probe in (states.get(phase) or {}).get("probes", []):
            lines.append(
                f"  [{phase}] {probe['activity']['name']}: {probe.get('output')!r} "
                f"(tolerance met: {probe.get('tolerance_met')})"
            )
    for run in journal.get("run", []):
        lines.append(
            f"  [method] {run['activity']['name']}: {run.get('status')} -> {run.get('output')!r}"
        )
    if failed:
        lines.append(f"failed activities: {', '.join(failed)}")
    lines.append("verdict: " + ("OK - the defenses held" if ok else "NOT OK"))
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "journal.json")
    ok, lines = summarize(json.loads(path.read_text()))
    print(f"journal: {path.resolve()}")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
