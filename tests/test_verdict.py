"""The three verdicts, judged from journals (chaosemergence.verdict.judge)."""

from __future__ import annotations

from typing import Any

import pytest

from chaosemergence.verdict import judge


def _probe(
    name: str, func: str, met: bool | None = True, status: str = "succeeded"
) -> dict[str, Any]:
    return {
        "activity": {"name": name, "provider": {"type": "python", "func": func}},
        "status": status,
        "output": 1.0,
        "tolerance_met": met,
    }


def journal(
    *,
    deviated: bool = False,
    after: list[dict[str, Any]] | None = None,
    activation: str | None = "succeeded",
    actions_ok: bool = True,
) -> dict[str, Any]:
    run = [_probe("inject", "inject_timeouts", status="succeeded" if actions_ok else "failed")]
    if activation is not None:
        run.append(_probe("activated", "check_defense_activation", status=activation))
    after = after if after is not None else [_probe("p99", "latency_percentile")]
    return {
        "status": "completed",
        "deviated": deviated,
        "steady_states": {
            "before": {"steady_state_met": True, "probes": []},
            "after": {"steady_state_met": not deviated, "probes": after},
        },
        "run": run,
    }


def test_on_needs_a_succeeded_activation_check() -> None:
    """Held is not enough with the defenses on: the loop breaker must have acted."""
    assert judge("on", journal())[0]
    assert not judge("on", journal(activation="failed"))[0]
    assert not judge("on", journal(activation=None))[0]


def test_off_needs_harm_not_only_a_mechanism_ratio() -> None:
    """A deviation on amplification alone is no harm; on p99 it is."""
    harm = journal(deviated=True, after=[_probe("p99", "latency_percentile", met=False)])
    ratio = journal(deviated=True, after=[_probe("amp", "retry_amplification", met=False)])
    assert judge("off", harm) == (True, "deviated on harm: p99")
    assert not judge("off", ratio)[0]
    assert not judge("off", journal())[0]


def test_cut_holds_although_the_activation_check_failed() -> None:
    """Defenses are off in the cut run: its activation check fails, the verdict is on harm."""
    assert judge("cut", journal(activation="failed"))[0]
    assert not judge("cut", journal(deviated=True, activation="failed"))[0]
    assert not judge("cut", journal(activation="failed", actions_ok=False))[0]


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        judge("sideways", journal())
