"""Judge journals: one run's verdict, and the three verdicts that prove a defense.

`python -m chaosemergence.verdict journal.json` prints one run's verdict (exit 1 if not OK).
`python -m chaosemergence.verdict --mode off journal.json` judges it as that mode of the three
verdicts (docs/experiments.md):

- on:  held (completed, not deviated, both hypotheses met, no failed activity) and at least
       one `check_defense_activation` in the method succeeded;
- off: deviated, the hypothesis met before, and a harm probe (what users see) failed after;
- cut: held (the loop cut, the harm is gone).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["HARM_PROBES", "MODES", "judge", "summarize"]

MODES = ("on", "off", "cut")
# Probes that measure harm a user or an SLO would see. Mechanism probes (amplification,
# computations per key, correlation) explain a deviation; only these can prove one.
HARM_PROBES = frozenset(
    {
        "cells_down",
        "failure_radius_outside",
        "goodput",
        "goodput_ratio",
        "latency_growth",
        "latency_percentile",
        "lost_writes",
        "measure_failure_radius",
    }
)
ACTIVATION_PROBE = "check_defense_activation"


def _func(activity_run: dict[str, Any]) -> str:
    provider = (activity_run.get("activity") or {}).get("provider") or {}
    return str(provider.get("func", ""))


def judge(mode: str, journal: dict[str, Any]) -> tuple[bool, str]:
    """(ok, why) for `journal` judged as the `mode` run of the three verdicts."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "cut":
        # Defenses are off: the activation check is expected to fail; every other activity
        # must succeed and the hypothesis must hold.
        states = journal.get("steady_states") or {}
        failed = [
            r["activity"]["name"]
            for r in journal.get("run", [])
            if r.get("status") != "succeeded" and _func(r) != ACTIVATION_PROBE
        ]
        held = (
            journal.get("status") == "completed"
            and not journal.get("deviated")
            and bool((states.get("before") or {}).get("steady_state_met"))
            and bool((states.get("after") or {}).get("steady_state_met"))
            and not failed
        )
        if held:
            return True, "held: the loop cut, no harm"
        detail = f" (failed: {', '.join(failed)})" if failed else ""
        return False, f"did not hold with the loop cut{detail}"
    held, _ = summarize(journal)
    if mode == "on":
        checks = [r for r in journal.get("run", []) if _func(r) == ACTIVATION_PROBE]
        activated = bool(checks) and all(r.get("status") == "succeeded" for r in checks)
        if not held:
            return False, "did not hold with the defenses on"
        if not checks:
            return False, "no check_defense_activation in the method: activation unproven"
        return activated, "held, and its defenses activated" if activated else "not activated"
    states = journal.get("steady_states") or {}
    before = (states.get("before") or {}).get("steady_state_met")
    after = (states.get("after") or {}).get("probes", [])
    broken = [p for p in after if p.get("tolerance_met") is False]
    harm = sorted(p["activity"]["name"] for p in broken if _func(p) in HARM_PROBES)
    if not before:
        return False, "the hypothesis did not hold before the method"
    if not journal.get("deviated") or not harm:
        names = [p["activity"]["name"] for p in broken]
        return False, f"no harm probe failed after the method (failed: {names or 'none'})"
    return True, f"deviated on harm: {', '.join(harm)}"


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
    args = list(sys.argv[1:] if argv is None else argv)
    mode = None
    if len(args) >= 2 and args[0] == "--mode":
        mode = args[1]
        del args[:2]
    path = Path(args[0] if args else "journal.json")
    journal = json.loads(path.read_text())
    ok, lines = summarize(journal)
    print(f"journal: {path.resolve()}")
    print("\n".join(lines))
    if mode is not None:
        ok, why = judge(mode, journal)
        print(f"three verdicts, {mode}: {'OK' if ok else 'NOT OK'} - {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
