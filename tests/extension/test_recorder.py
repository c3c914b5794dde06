"""The recorder control's guarantees that need no traffic: it never fails or hangs a run, and its
progress line says where the run is and how long is left (tests/e2e/test_recorder_e2e.py runs it
for real)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chaosemergence.controls import recorder
from chaosemergence.controls.recorder import Recorder, timeline_of
from tests.conftest import free_port


def test_an_unreachable_system_never_fails_or_hangs_the_run(tmp_path: Path) -> None:
    """Nothing listens on the port: every read fails (counted), the run goes on, the thread
    stops at the end, and the journal still gets its (empty) timeline."""
    port = free_port()
    (tmp_path / f"admin-token-{port}").write_text("token")  # so the reads reach the network
    configuration: dict[str, Any] = {
        "emergence_url": f"http://127.0.0.1:{port}",
        "emergence_state_dir": str(tmp_path),
        "defenses": "off",
    }
    experiment = {"method": [{"type": "action", "name": "a", "pauses": {"after": 3}}]}
    recorder.before_experiment_control(
        experiment, configuration=configuration, interval=0.2, timeout=0.5, progress_every=0
    )
    running = recorder._recorder
    assert running is not None and running.running
    deadline = time.monotonic() + 20
    while running.errors < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.errors >= 3, "the thread did not keep sampling"
    recorder.before_method_control(experiment)
    recorder.before_activity_control(experiment["method"][0], configuration=configuration)
    recorder.after_activity_control(experiment["method"][0], state={"status": "succeeded"})
    recorder.after_method_control(experiment)
    journal: dict[str, Any] = {"status": "completed"}
    recorder.after_experiment_control(experiment, state=journal)
    assert not running.running and recorder._recorder is None
    timeline = timeline_of(journal)
    assert timeline is not None
    assert timeline["samples"] == [] and timeline["errors"] >= 3
    assert "Connect" in (timeline["last_error"] or "")
    assert timeline["mode"] == {"defenses": "off", "loop": None}
    assert [m["name"] for m in timeline["marks"]] == ["a"]
    recorder.cleanup_control()  # idempotent


def test_a_broken_journal_or_a_missing_recorder_is_no_error() -> None:
    recorder.cleanup_control()
    recorder.after_experiment_control({}, state={})  # no recorder: nothing happens
    recorder.before_activity_control({"name": "x"})
    recorder.after_method_control({})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _unreachable(path: str, params: dict[str, Any] | None) -> Any:
    raise AssertionError("progress lines must not read the system")


def test_progress_line_says_activity_elapsed_remaining_and_live_figures() -> None:
    clock = Clock(1000.0)
    lines: list[str] = []
    rec = Recorder(
        _unreachable,
        plan=[("inject", 0.0), ("settle", 15.0), ("check", 0.0)],
        warmup=10.0,
        now=clock,
        log=lines.append,
    )
    assert rec.remaining() == 25.0  # warm-up + the method's pauses
    clock.now = 1004.0
    assert rec.remaining() == 21.0
    clock.now = 1012.0
    rec.phase("method_start")
    rec.begin_activity({"name": "inject", "type": "action"}, 0.0)
    rec.end_activity({"name": "inject"}, {"status": "succeeded"})
    rec.begin_activity({"name": "settle", "type": "action"}, 15.0)
    clock.now = 1017.0
    assert rec.remaining() == 10.0
    rec.samples.append({"t": 1017.0, "p99_ms": 412.4, "failure_radius_pct": 3.25, "cells_up": 3,
                        "cells_total": 4})  # fmt: skip
    rec.events.append({"kind": "activated", "defense": "circuit_breaker"})
    line = rec.progress_line()
    assert line == (
        "[progress] method: settle | elapsed 0:17 | ~0:10 left | p99 412 ms | "
        "failure radius 3.2% | cells up 3/4 | defense activations 1"
    )
    rec._progress()
    assert lines == [line]
    rec._progress()  # not again before progress_every (5 s) has passed
    assert lines == [line]
    clock.now = 1022.0
    rec._progress()
    assert len(lines) == 2
    rec.end_activity({"name": "settle"}, {"status": "succeeded"})
    rec.phase("method_end")
    assert rec.remaining() == 0.0
    assert rec.current == "hypothesis (after)"
