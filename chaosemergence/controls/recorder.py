"""Control: record the experiment's timeline into the journal, and say how the run is going.

Declared at experiment level, first in the list (so it also sees the system start and the
traffic's warm-up):

    controls:
      - name: recorder
        provider:
          type: python
          module: chaosemergence.controls.recorder

While the experiment runs, a daemon thread samples the reference system every `interval`
seconds (1 by default) through the admin API, with a `timeout` on every call:

- `/admin/increase?seconds=<window>`: the same counters the probes read, turned into the same
  figures (p99, error rate, failure radius, retry amplification, per-cell failure share);
- `/health`: how many cells are up;
- `/admin/events?since=`: every defense activation and deactivation, as it happens.

The control's activity hooks mark when each activity of the hypotheses, the method and the
rollbacks started and ended. At the end (after one last sample), the timeline goes into the
journal's `extensions` list as `{"name": "chaosemergence-timeline", ...}` (`timeline_of(journal)`
finds it), where `chaosemergence report` draws it. Every few seconds (`progress_every`) the
thread logs one progress line: the current activity, elapsed and remaining time, live p99 and
failure radius.

The recorder can never fail or hang a run: every call is bounded, every error is counted
and logged, never raised, and the thread is stopped (joined with a timeout) at the end and
at cleanup.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from chaoslib import substitute
from chaoslib.types import Configuration, Experiment, Journal, Secrets

from chaosemergence.client import AdminClient
from chaosemergence.measure import (
    bucket_counts,
    histogram_quantile,
    percent_failed,
    samples_total,
)
from chaosemergence.settings import ExtensionSettings

__all__ = [
    "TIMELINE_NAME",
    "Recorder",
    "after_activity_control",
    "after_experiment_control",
    "after_hypothesis_control",
    "after_method_control",
    "after_rollback_control",
    "before_activity_control",
    "before_experiment_control",
    "before_hypothesis_control",
    "before_method_control",
    "before_rollback_control",
    "cleanup_control",
    "figures_from_samples",
    "timeline_of",
]

logger = logging.getLogger("chaostoolkit")
TIMELINE_NAME = "chaosemergence-timeline"
TIMELINE_VERSION = 1
MAX_SAMPLES = 20_000  # 5.5 h at one a second: a bound on the journal, not a plan
MAX_EVENTS = 5_000
# Paths whose refusals users feel as failures (as the probes count them).
_CRITICAL_ROUTES = ("payments", "profile")


def figures_from_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The probes' headline figures from one `/admin/increase` answer's samples.

    Failure radius: % of user requests that failed (errors anywhere, sheds on payments and
    profile), as `measure_failure_radius`; error rate: % answered with an error (sheds not
    counted); retry amplification: dependency attempts and gateway retries per request, as
    `retry_amplification`; `cells`: each cell's failure radius. None where the window holds
    no request.
    """

    requests = samples_total(samples, "emergence_requests_total")
    errors = samples_total(samples, "emergence_requests_total", outcome="failure")
    attempts = samples_total(samples, "emergence_dependency_attempts_total") + samples_total(
        samples, "emergence_gateway_retries_total"
    )
    p99 = histogram_quantile(0.99, bucket_counts(samples, "emergence_request_duration_seconds"))
    cells = sorted(
        {
            str(s["labels"].get("cell"))
            for s in samples
            if s["name"] == "emergence_requests_total" and s["labels"].get("cell") is not None
        },
        key=lambda c: (not c.isdigit(), int(c) if c.isdigit() else 0, c),
    )
    per_cell: dict[str, float | None] = {}
    for cell in cells:
        seen = samples_total(samples, "emergence_requests_total", cell=cell)
        per_cell[cell] = percent_failed(samples, cell=cell) if seen else None
    if not requests:
        return {
            "requests": 0.0,
            "p99_ms": None,
            "error_rate_pct": None,
            "failure_radius_pct": None,
            "retry_amplification": None,
            "cells": per_cell,
        }
    return {
        "requests": requests,
        "p99_ms": None if math.isnan(p99) else round(p99 * 1000.0, 1),
        "error_rate_pct": round(100.0 * errors / requests, 3),
        "failure_radius_pct": percent_failed(samples),
        "retry_amplification": round(attempts / requests, 3),
        "cells": per_cell,
    }


def timeline_of(journal: dict[str, Any]) -> dict[str, Any] | None:
    """The recorder's timeline in a journal (None when the run had no recorder)."""
    for extension in journal.get("extensions") or []:
        if isinstance(extension, dict) and extension.get("name") == TIMELINE_NAME:
            return extension
    return None


def _seconds(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) and number > 0 else 0.0


def _pauses(activity: dict[str, Any], configuration: Configuration, secrets: Secrets) -> float:
    try:
        pauses = substitute(activity.get("pauses") or {}, configuration, secrets)
    except Exception:  # a bad pause is chaoslib's to report, not ours
        return 0.0
    return _seconds(pauses.get("before")) + _seconds(pauses.get("after"))


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class Recorder:
    """Samples the system on a daemon thread; holds the timeline of one run.

    `fetch(path, params)` answers one admin GET (bounded by its own timeout) and `now` is the
    wall clock; both are injectable for tests.
    """

    def __init__(
        self,
        fetch: Callable[[str, dict[str, Any] | None], Any],
        *,
        interval: float = 1.0,
        window: float = 5.0,
        progress_every: float = 5.0,
        plan: list[tuple[str, float]] | None = None,
        warmup: float = 0.0,
        mode: dict[str, Any] | None = None,
        now: Callable[[], float] = time.time,
        log: Callable[[str], None] = logger.info,
    ) -> None:
        self._fetch, self._now, self._log = fetch, now, log
        self.interval, self.window, self.progress_every = interval, window, progress_every
        self.plan = list(plan or [])  # the method's activities and their pauses, in order
        self.warmup = warmup
        self.started_at = now()
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.marks: list[dict[str, Any]] = []
        self.phases: dict[str, float] = {}
        self.mode = dict(mode or {})
        self.errors = 0
        self.last_error: str | None = None
        self.current: str = "starting"
        self._current_started = self.started_at
        self._current_pause = 0.0
        self._done_in_method = 0
        self._events_since = self.started_at
        self._seen_events: set[tuple[Any, ...]] = set()
        self._last_progress = -math.inf
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="emergence-recorder", daemon=True)

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        ticks = 0
        origin = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            ticks += 1
            # Keep to the grid: a slow sample skips slots rather than drifting.
            delay = origin + ticks * self.interval - time.monotonic()
            if delay < 0:
                ticks += int(-delay // self.interval) + 1
                delay = origin + ticks * self.interval - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                break

    def tick(self, progress: bool = True) -> None:
        """Take one sample (and log progress when due); never raises."""
        try:
            self._sample()
        except Exception as error:  # the recorder must never break a run
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error}"
            logger.debug("recorder: sample failed: %s", self.last_error)
        try:
            if progress:
                self._progress()
        except Exception as error:
            logger.debug("recorder: progress line failed: %s", error)

    def _sample(self) -> None:
        at = self._now()
        sample: dict[str, Any] = {"t": round(at, 3)}
        try:
            health = self._fetch("/health", None)
            sample["cells_up"] = int(health.get("alive"))
            sample["cells_total"] = int(health.get("cells"))
        except Exception as error:
            self.errors += 1
            self.last_error = f"/health: {type(error).__name__}: {error}"
            sample["cells_up"] = None
        answer = self._fetch("/admin/increase", {"seconds": self.window})
        sample.update(figures_from_samples(answer["samples"]))
        with self._lock:
            if len(self.samples) < MAX_SAMPLES:
                self.samples.append(sample)
        self._read_events()

    def _read_events(self) -> None:
        answer = self._fetch("/admin/events", {"since": self._events_since})
        with self._lock:
            for event in answer.get("events") or []:
                key = (event.get("at"), event.get("defense"), event.get("kind"), event.get("cell"))
                if key in self._seen_events or len(self.events) >= MAX_EVENTS:
                    continue
                self._seen_events.add(key)
                self.events.append(
                    {
                        "at": event.get("at"),
                        "defense": event.get("defense"),
                        "kind": event.get("kind"),
                        "cell": event.get("cell"),
                        "reason": str(event.get("reason", ""))[:200],
                    }
                )
                at = event.get("at")
                if isinstance(at, (int, float)):
                    self._events_since = max(self._events_since, float(at))

    # -- progress ------------------------------------------------------------------------
    def remaining(self) -> float:
        """Seconds left by the plan: warm-up, then the method's pauses (not yet elapsed)."""
        now = self._now()
        method_start = self.phases.get("method_start")
        if "method_end" in self.phases:
            return 0.0
        left_in_plan = sum(p for _, p in self.plan[self._done_in_method :])
        if method_start is None:
            return max(0.0, self.started_at + self.warmup - now) + left_in_plan
        if self.current.startswith("method:") and self._done_in_method < len(self.plan):
            current = max(0.0, self._current_started + self._current_pause - now)
            later = sum(p for _, p in self.plan[self._done_in_method + 1 :])
            return current + later
        return left_in_plan

    def progress_line(self) -> str:
        now = self._now()
        with self._lock:
            last = self.samples[-1] if self.samples else {}
            activations = sum(1 for e in self.events if e.get("kind") == "activated")
        p99 = last.get("p99_ms")
        radius = last.get("failure_radius_pct")
        up, total = last.get("cells_up"), last.get("cells_total")
        parts = [
            f"[progress] {self.current}",
            f"elapsed {_clock(now - self.started_at)}",
            f"~{_clock(self.remaining())} left",
            f"p99 {p99:.0f} ms" if isinstance(p99, (int, float)) else "p99 -",
            f"failure radius {radius:.1f}%" if isinstance(radius, (int, float)) else
            "failure radius -",
        ]  # fmt: skip
        if up is not None and total:
            parts.append(f"cells up {up}/{total}")
        parts.append(f"defense activations {activations}")
        return " | ".join(parts)

    def _progress(self) -> None:
        if self.progress_every <= 0:
            return
        now = self._now()
        if now - self._last_progress >= self.progress_every:
            self._last_progress = now
            self._log(self.progress_line())

    # -- marks -----------------------------------------------------------------------------
    def phase(self, name: str) -> None:
        self.phases.setdefault(name, round(self._now(), 3))
        if name == "method_start":
            self.current = "method"
        elif name == "method_end":
            self.current = "hypothesis (after)"

    def begin_activity(self, activity: dict[str, Any], pause: float) -> None:
        if "rollbacks_start" in self.phases:
            where = "rollback"
        elif "method_end" in self.phases:
            where = "hypothesis-after"
        elif "method_start" in self.phases:
            where = "method"
        else:
            where = "hypothesis-before"
        name = str(activity.get("name", "?"))
        now = self._now()
        self.current = {
            "method": f"method: {name}",
            "rollback": f"rollback: {name}",
            "hypothesis-before": f"hypothesis (before): {name}",
            "hypothesis-after": f"hypothesis (after): {name}",
        }[where]
        self._current_started, self._current_pause = now, pause
        with self._lock:
            self.marks.append(
                {
                    "name": name,
                    "type": str(activity.get("type", "")),
                    "phase": where,
                    "start": round(now, 3),
                    "end": None,
                    "status": None,
                }
            )

    def end_activity(self, activity: dict[str, Any], run: Any) -> None:
        name = str(activity.get("name", "?"))
        with self._lock:
            for mark in reversed(self.marks):
                if mark["name"] == name and mark["end"] is None:
                    mark["end"] = round(self._now(), 3)
                    if isinstance(run, dict):
                        mark["status"] = run.get("status")
                        mark["ran_from"] = run.get("start")
                        mark["ran_to"] = run.get("end")
                    if mark["phase"] == "method":
                        self._done_in_method += 1
                    break

    def timeline(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": TIMELINE_NAME,
                "version": TIMELINE_VERSION,
                "interval": self.interval,
                "window": self.window,
                "started_at": round(self.started_at, 3),
                "ended_at": round(self._now(), 3),
                "phases": dict(self.phases),
                "mode": dict(self.mode),
                "samples": list(self.samples),
                "events": list(self.events),
                "marks": [dict(m) for m in self.marks],
                "errors": self.errors,
                "last_error": self.last_error,
            }


# The recorder of the running experiment (None outside of one).
_recorder: Recorder | None = None


def _admin_fetch(
    settings: ExtensionSettings, timeout: float
) -> Callable[[str, dict[str, Any] | None], Any]:
    bounded = dataclasses.replace(settings, timeout=timeout)
    admin = AdminClient(bounded)

    def fetch(path: str, params: dict[str, Any] | None) -> Any:
        # Every read, /health included, goes to the admin API's own listener: the recorder
        # keeps sampling while the data plane collapses.
        return admin.get(path, what=f"recorder: read {path}", params=params)

    return fetch


def _warmup(experiment: Experiment, configuration: Configuration, secrets: Secrets) -> float:
    """The traffic control's warm-up (seconds before the hypothesis runs), if it has one."""
    for control in experiment.get("controls") or []:
        provider = control.get("provider") or {}
        if provider.get("module") == "chaosemergence.controls.traffic":
            try:
                arguments = substitute(provider.get("arguments") or {}, configuration, secrets)
            except Exception:
                return 0.0
            return _seconds(arguments.get("warmup"))
    return 0.0


def before_experiment_control(
    context: Experiment,
    configuration: Configuration = None,
    secrets: Secrets = None,
    interval: float = 1.0,
    window: float = 5.0,
    progress_every: float = 5.0,
    timeout: float = 2.0,
    **kwargs: Any,
) -> None:
    """Start sampling (a daemon thread) and plan the remaining-time estimate."""
    global _recorder
    cleanup_control()
    try:
        settings = ExtensionSettings.from_chaos(configuration, secrets)
        plan = [
            (str(a.get("name", "?")), _pauses(a, configuration, secrets))
            for a in context.get("method") or []
        ]
        mode = {k: (configuration or {}).get(k) for k in ("defenses", "loop")}
        _recorder = Recorder(
            _admin_fetch(settings, min(max(float(timeout), 0.1), 10.0)),
            interval=min(max(float(interval), 0.2), 60.0),
            window=min(max(float(window), 1.0), 900.0),
            progress_every=float(progress_every),
            plan=plan,
            warmup=_warmup(context, configuration, secrets),
            mode=mode,
        )
        _recorder.start()
        logger.info(
            "recorder: sampling %s every %.1f s (%.0f s windows) into the journal",
            settings.emergence_url,
            _recorder.interval,
            _recorder.window,
        )
    except Exception as error:  # never fail the run
        logger.warning("recorder: not recording this run: %s", error)
        _recorder = None


def _safely(action: Callable[[Recorder], None]) -> None:
    if _recorder is None:
        return
    try:
        action(_recorder)
    except Exception as error:
        logger.debug("recorder: %s", error)


def before_hypothesis_control(context: Any, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("hypothesis_after_start" if "method_end" in r.phases else
                              "hypothesis_before_start"))  # fmt: skip


def after_hypothesis_control(context: Any, state: Any = None, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("hypothesis_after_end" if "method_end" in r.phases else
                              "hypothesis_before_end"))  # fmt: skip


def before_method_control(context: Any, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("method_start"))


def after_method_control(context: Any, state: Any = None, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("method_end"))


def before_rollback_control(context: Any, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("rollbacks_start"))


def after_rollback_control(context: Any, state: Any = None, **kwargs: Any) -> None:
    _safely(lambda r: r.phase("rollbacks_end"))


def before_activity_control(
    context: dict[str, Any],
    configuration: Configuration = None,
    secrets: Secrets = None,
    **kwargs: Any,
) -> None:
    _safely(lambda r: r.begin_activity(context, _pauses(context, configuration, secrets)))


def after_activity_control(context: dict[str, Any], state: Any = None, **kwargs: Any) -> None:
    _safely(lambda r: r.end_activity(context, state))


def after_experiment_control(context: Experiment, state: Journal, **kwargs: Any) -> None:
    """Stop sampling and write the timeline into the journal's extensions."""
    global _recorder
    recorder = _recorder
    if recorder is None:
        return
    try:
        recorder.stop(timeout=recorder.interval + 12.0)
        if not recorder.running:
            # One last sample, so the series reaches past the rollbacks (each read bounded).
            recorder.tick(progress=False)
        timeline = recorder.timeline()
        if isinstance(state, dict):
            extensions = state.get("extensions")
            if not isinstance(extensions, list):
                extensions = state["extensions"] = []
            extensions[:] = [e for e in extensions if not (
                isinstance(e, dict) and e.get("name") == TIMELINE_NAME)]  # fmt: skip
            extensions.append(timeline)
        logger.info(
            "recorder: %d samples, %d defense events, %d activity marks into the journal%s",
            len(timeline["samples"]),
            len(timeline["events"]),
            len(timeline["marks"]),
            f" ({recorder.errors} failed reads; last: {recorder.last_error})"
            if recorder.errors
            else "",
        )
    except Exception as error:
        logger.warning("recorder: could not write the timeline: %s", error)
    finally:
        _recorder = None


def cleanup_control() -> None:
    """Stop the sampling thread (idempotent; also runs when the run is interrupted)."""
    global _recorder
    if _recorder is not None:
        _recorder.stop()
        _recorder = None
