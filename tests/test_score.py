"""The resilience score: the share of hypothesis probes that held, weighted, and their headroom."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaosemergence.score import HARM_WEIGHT, OTHER_WEIGHT, headroom, score_run


def _declared(name: str, func: str, tolerance: Any) -> dict[str, Any]:
    return {"type": "probe", "name": name, "tolerance": tolerance, "provider": {"func": func}}


def _ran(name: str, output: Any, met: bool) -> dict[str, Any]:
    return {"activity": {"name": name}, "status": "succeeded", "output": output,
            "tolerance_met": met}  # fmt: skip


def journal(p99: float, p99_met: bool, amplification: float = 1.0) -> dict[str, Any]:
    """p99 (harm, weight 2) within [0, 1000], amplification (mechanism, 1) within [0, 4]."""
    return {
        "experiment": {
            "steady-state-hypothesis": {
                "probes": [
                    _declared("p99", "latency_percentile", {"type": "range", "range": [0, 1000]}),
                    _declared("amp", "retry_amplification", {"type": "range", "range": [0, 4]}),
                    _declared("lost", "lost_writes", 0),
                ]
            }
        },
        "steady_states": {
            "after": {
                "probes": [
                    _ran("p99", p99, p99_met),
                    _ran("amp", amplification, True),
                    _ran("lost", 0, True),
                ]
            }
        },
    }


def test_score_drops_when_a_probe_misses_its_tolerance() -> None:
    held = score_run(journal(p99=500.0, p99_met=True))
    missed = score_run(journal(p99=1500.0, p99_met=False))
    assert held.score is not None and missed.score is not None
    # p99: credit 0.5 + 0.5 x 0.5 = 0.75 (weight 2); amp: 0.5 + 0.5 x 0.75 (1); lost: 1 (2).
    assert held.score == pytest.approx(100 * (2 * 0.75 + 1 * 0.875 + 2 * 1.0) / 5, abs=0.05)
    # Missed: the p99 probe earns nothing.
    assert missed.score == pytest.approx(100 * (1 * 0.875 + 2 * 1.0) / 5, abs=0.05)
    p99 = next(p for p in missed.probes if p.name == "p99")
    assert not p99.held and p99.credit == 0 and p99.weight == HARM_WEIGHT
    assert next(p for p in missed.probes if p.name == "amp").weight == OTHER_WEIGHT


def test_score_rewards_headroom() -> None:
    near = score_run(journal(p99=990.0, p99_met=True)).score
    far = score_run(journal(p99=10.0, p99_met=True)).score
    assert near is not None and far is not None and far > near


def test_a_probe_that_never_ran_after_the_method_scores_nothing() -> None:
    aborted = journal(p99=500.0, p99_met=True)
    aborted["steady_states"]["after"] = None
    result = score_run(aborted)
    assert result.score == 0
    assert all(p.why == "not judged after the method" for p in result.probes)


def test_no_hypothesis_no_score() -> None:
    assert score_run({"experiment": {}}).score is None


@pytest.mark.parametrize(
    ("value", "bounds", "expected"),
    [
        (0.0, [0, 10], 1.0),  # lower is better: at 0, all the room
        (7.5, [0, 10], 0.25),
        (12.0, [0, 10], 0.0),
        (1.0, [0.75, 1000], 0.333),  # higher is better: relative to the floor
        (2.0, [0.75, 1000], 1.0),
        (5.0, [4, 8], 0.5),  # two-sided: distance to the nearer bound
    ],
)
def test_headroom_by_range_shape(value: float, bounds: list[float], expected: float) -> None:
    room = headroom(value, {"type": "range", "range": bounds})
    assert room == pytest.approx(expected, abs=0.001)


def test_exact_tolerances_have_no_headroom_measure() -> None:
    assert headroom(0, 0) is None and headroom(False, False) is None
    assert headroom("x", {"type": "range", "range": [0, 1]}) is None


def test_scoring_does_not_change_the_journal() -> None:
    original = journal(p99=500.0, p99_met=True)
    kept = copy.deepcopy(original)
    score_run(original)
    assert original == kept
