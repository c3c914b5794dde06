"""Real Locust runs (local and distributed) against a real local HTTP target, and spec checks."""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from chaosemergence.traffic import (
    TrafficError,
    TrafficSpec,
    start_traffic,
    stop_traffic,
    traffic_status,
)
from chaosemergence.traffic import runner as traffic_runner
from chaosemergence.traffic.profiles import hot_key_ids

from .conftest import Hit, TargetServer, port_listening

PROFILE, PAYMENTS, RECOMMENDATIONS = (
    "GET /users/[id]/profile",
    "POST /users/[id]/payments",
    "GET /users/[id]/recommendations",
)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass."""
    until = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > until:
            return False
        time.sleep(0.05)
    return True


def on_the_tick(hits: list[Hit], period: float, window: float) -> float:
    """Fraction of hits that arrived within ``window`` seconds after a multiple of ``period``."""
    return sum((hit.at % period) < window for hit in hits) / len(hits)


def gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (exited; a zombie awaiting its parent counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def fast_spec(target: TargetServer, **overrides: object) -> TrafficSpec:
    """A short, brisk spec against ``target`` (users wait 0.1-0.3 s between requests)."""
    fields: dict[str, object] = {
        "target_url": target.url,
        "users": 10,
        "spawn_rate": 10,
        "duration": 3,
        "wait_min": 0.1,
        "wait_max": 0.3,
    }
    fields.update(overrides)
    return TrafficSpec(**fields)  # type: ignore[arg-type]


def test_local_run_hits_all_three_routes_and_stops_by_itself(
    target: TargetServer, tmp_path: Path
) -> None:
    """One local Locust drives profile/payments/recommendations with hot keys, then exits alone."""
    spec = fast_spec(target, population=1000, hot_keys=5, hot_share=0.5)
    started = time.monotonic()
    run = start_traffic(spec, tmp_path)
    assert len(run.pids) == 1
    assert run.wait(timeout=30), "Locust did not stop by itself"
    assert time.monotonic() - started < spec.duration + 10
    status = traffic_status(tmp_path)
    assert status["state_file"] and not status["running"]

    summary = stop_traffic(tmp_path)
    assert summary is not None
    assert summary.source == "final"
    hits = target.snapshot()
    routes = collections.Counter(hit.route for hit in hits)
    assert set(routes) == {"profile", "payments", "recommendations"}
    assert routes["profile"] > routes["recommendations"] > routes["payments"] > 0
    assert abs(summary.requests - len(hits)) <= spec.users
    assert summary.failures == 0
    assert set(summary.endpoints) == {PROFILE, PAYMENTS, RECOMMENDATIONS}
    assert summary.endpoints[PAYMENTS].requests == pytest.approx(routes["payments"], abs=3)
    assert summary.exit_codes == {run.pids[0]: 0}

    payments = [hit.body for hit in hits if hit.route == "payments"]
    assert all(isinstance(body, dict) for body in payments)
    keys = [body["idempotency_key"] for body in payments if isinstance(body, dict)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", str(key)) for key in keys)
    assert len(set(keys)) == len(keys)
    assert all(
        isinstance(body, dict)
        and isinstance(body["amount_cents"], int)
        and body["amount_cents"] > 0
        for body in payments
    )
    hot = set(hot_key_ids(spec.seed, spec.population, spec.hot_keys))
    profile_ids = [hit.user_id for hit in hits if hit.route == "profile"]
    assert 0.3 < sum(uid in hot for uid in profile_ids) / len(profile_ids) < 0.75
    assert {hit.load for hit in hits} == {"locust/local"}
    # The negative control of the lockstep test: random waits do not cluster on the tick.
    assert on_the_tick(hits, 1.0, 0.2) < 0.5

    assert not (tmp_path / "traffic.json").exists()
    assert stop_traffic(tmp_path) is None


def test_a_single_path_run_sends_only_that_path(target: TargetServer, tmp_path: Path) -> None:
    """`path` (make bench's load-generation figures): every user GETs it, nothing of the mix."""
    spec = fast_spec(target, duration=2, wait_min=0, wait_max=0, path="/users/7/profile")
    run = start_traffic(spec, tmp_path)
    assert run.wait(timeout=30), "Locust did not stop by itself"
    summary = stop_traffic(tmp_path)
    assert summary is not None and summary.failures == 0
    hits = target.snapshot()
    assert len(hits) > 20  # no wait between requests
    assert {(hit.method, hit.route, hit.user_id) for hit in hits} == {("GET", "profile", 7)}
    assert set(summary.endpoints) == {"GET /users/7/profile"}


def test_distributed_run_with_two_workers_delivers_and_leaves_nothing(
    target: TargetServer, tmp_path: Path
) -> None:
    """A master and two workers all deliver requests, stop by themselves, close the master port."""
    run = start_traffic(fast_spec(target, users=8, spawn_rate=8, workers=2), tmp_path)
    assert len(run.pids) == 3
    assert run.master_port is not None
    assert port_listening(run.master_port)
    assert run.wait(timeout=40), "distributed Locust did not stop by itself"

    # Two concurrent stops (a control and a rollback, say): one summarizes, the other finds none.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: stop_traffic(tmp_path), range(2)))
    assert results.count(None) == 1
    summary = next(result for result in results if result is not None)
    hits = target.snapshot()
    assert {hit.load for hit in hits} == {"locust/0", "locust/1"}
    assert {hit.route for hit in hits} == {"profile", "payments", "recommendations"}
    assert summary.requests > 0
    assert abs(summary.requests - len(hits)) <= 8
    assert all(gone(pid) for pid in run.pids)
    assert not port_listening(run.master_port)


def test_stop_traffic_from_another_process_stops_a_long_run(
    target: TargetServer, tmp_path: Path
) -> None:
    """A process that only knows the state dir stops a 2-minute distributed run, no orphans."""
    run = start_traffic(fast_spec(target, workers=2, duration=120), tmp_path)
    assert wait_until(lambda: target.count() >= 30, timeout=15)
    with pytest.raises(TrafficError, match="already running"):
        start_traffic(fast_spec(target), tmp_path)

    script = (
        "import json, sys\n"
        "from chaosemergence.traffic import stop_traffic\n"
        "summary = stop_traffic(sys.argv[1])\n"
        "print(json.dumps(summary.as_dict() if summary else None))\n"
    )
    # The subprocess timeout (60 s) is half the run's 120 s: returning at all means stopped.
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    summary = json.loads(done.stdout)
    assert summary["source"] == "final"
    assert summary["requests"] >= 30
    assert all(gone(pid) for pid in run.pids), "stop_traffic left Locust processes running"
    assert run.wait(timeout=5)
    assert run.master_port is not None and not port_listening(run.master_port)
    assert traffic_status(tmp_path)["running"] is False
    assert not (tmp_path / "traffic.json").exists()
    settled = target.count()
    time.sleep(1.0)
    assert target.count() == settled


def test_a_run_started_with_sigint_ignored_still_stops_gracefully(
    target: TargetServer, tmp_path: Path
) -> None:
    """Started from a background job (SIGINT ignored, inherited by Locust), the graceful
    SIGINT still stops it: final stats written, not the SIGTERM fallback's periodic ones."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = start_traffic(fast_spec(target, duration=120), tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert wait_until(lambda: target.count() >= 10, timeout=15)
    summary = stop_traffic(tmp_path)
    assert summary is not None and summary.source == "final", summary
    assert (tmp_path / "locust_final.json").exists()
    assert all(gone(pid) for pid in run.pids)


def test_synchronized_shape_fires_in_lockstep(target: TargetServer, tmp_path: Path) -> None:
    """All users of both workers fire within a few milliseconds of each wall-clock tick."""
    spec = fast_spec(
        target, shape="synchronized", users=20, spawn_rate=20, workers=2, duration=5,
        sync_period=1.0,
    )  # fmt: skip
    run = start_traffic(spec, tmp_path)
    assert run.wait(timeout=40)
    assert stop_traffic(tmp_path) is not None
    hits = target.snapshot()
    assert len(hits) >= 40
    assert on_the_tick(hits, 1.0, 0.2) > 0.9
    bursts = collections.Counter(int(hit.at) for hit in hits)
    full = [second for second, count in bursts.items() if count >= 15]
    assert len(full) >= 3, bursts
    for second in full:
        assert {hit.load for hit in hits if int(hit.at) == second} == {"locust/0", "locust/1"}


def test_spike_shape_runs_baseline_then_spike_then_baseline(
    target: TargetServer, tmp_path: Path
) -> None:
    """The spike shape holds users/4, jumps to users in the middle third, then drops back."""
    spec = fast_spec(target, shape="spike", users=8, spawn_rate=8, duration=7)
    run = start_traffic(spec, tmp_path)
    assert run.wait(timeout=30)
    assert stop_traffic(tmp_path) is not None
    with (tmp_path / "locust_stats_history.csv").open(newline="") as handle:
        counts = [int(row["User Count"]) for row in csv.DictReader(handle)]
    assert max(counts) == 8
    peak_at = counts.index(8)
    assert 2 in counts[:peak_at], counts
    assert 2 in counts[peak_at:], counts


def test_5xx_and_timeouts_count_as_failures(target: TargetServer, tmp_path: Path) -> None:
    """A 503 and a response slower than the request timeout are Locust failures; 200s are not."""
    target.status["payments"] = 503
    target.delay["recommendations"] = 1.5
    spec = fast_spec(target, users=10, duration=4, request_timeout=0.5, wait_min=0.05, wait_max=0.1)
    run = start_traffic(spec, tmp_path)
    assert run.wait(timeout=30)
    summary = stop_traffic(tmp_path)
    assert summary is not None
    payments, recommendations = summary.endpoints[PAYMENTS], summary.endpoints[RECOMMENDATIONS]
    assert payments.requests > 0 and payments.failures == payments.requests
    assert recommendations.requests > 0 and recommendations.failures == recommendations.requests
    assert summary.endpoints[PROFILE].failures == 0
    assert summary.failures == payments.failures + recommendations.failures
    assert summary.exit_codes[run.pids[0]] == 1  # Locust's --exit-code-on-error default


def test_hard_deadline_ends_a_run_nobody_stops(
    target: TargetServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even if stop_traffic is never called, Locust quits by itself at its hard deadline."""
    environment = traffic_runner._environment

    def soon(spec: TrafficSpec, deadline: float, ready_file: Path) -> dict[str, str]:
        return environment(spec, time.time() + 3, ready_file)

    monkeypatch.setattr(traffic_runner, "_environment", soon)
    run = start_traffic(fast_spec(target, duration=300), tmp_path)
    assert run.wait(timeout=20), "the hard deadline did not stop Locust"
    summary = stop_traffic(tmp_path)
    assert summary is not None and summary.requests > 0
    assert summary.source == "final"


def test_a_locust_that_cannot_start_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Locust dies on startup, start_traffic raises with its log and leaves nothing behind."""
    broken = tmp_path / "locustfile.py"
    broken.write_text("raise RuntimeError('broken locustfile for the test')\n")
    monkeypatch.setattr(traffic_runner, "LOCUSTFILE", broken)
    state_dir = tmp_path / "state"
    with pytest.raises(TrafficError, match="exited") as failure:
        start_traffic(
            TrafficSpec("http://127.0.0.1:9", users=1, spawn_rate=1, duration=5), state_dir
        )
    assert "broken locustfile for the test" in str(failure.value)
    assert not (state_dir / "traffic.json").exists()


def test_nothing_running_means_none_and_not_running(tmp_path: Path) -> None:
    """stop_traffic is idempotent: with no recorded run it returns None."""
    assert stop_traffic(tmp_path) is None
    assert stop_traffic(tmp_path / "never-created") is None
    assert traffic_status(tmp_path)["running"] is False


VALID = {"target_url": "http://127.0.0.1:8080", "users": 10, "spawn_rate": 5.0, "duration": 30}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("users", 0),
        ("users", 5001),
        ("users", 2.5),
        ("users", True),
        ("users", "10"),
        ("spawn_rate", 0),
        ("spawn_rate", -1),
        ("spawn_rate", float("nan")),
        ("duration", 0),
        ("duration", 3601),
        ("duration", float("inf")),
        ("shape", "sawtooth"),
        ("workers", -1),
        ("workers", 9),
        ("hot_share", 1.5),
        ("hot_keys", -1),
        ("wait_min", -0.1),
        ("wait_max", 0.1),
        ("seed", "42"),
        ("path", "users/1"),
        ("path", "/a b"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(field: str, value: object) -> None:
    """Each out-of-range or mistyped field raises ValueError whose message starts with its name."""
    with pytest.raises(ValueError, match=rf"^{field}:"):
        TrafficSpec(**{**VALID, field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8080",
        "http://192.168.1.20",
        "http://0.0.0.0:8080",
        "http://example.com",
        "http://127.0.0.1.nip.io:8080",
        "http://[2001:db8::1]:8080",
        "ftp://127.0.0.1/",
        "127.0.0.1:8080",
        "http://127.0.0.1:99999",
    ],
)
def test_non_loopback_or_non_http_targets_are_refused(url: str) -> None:
    """Load runs only target http(s) on loopback: anything else is refused naming target_url."""
    with pytest.raises(ValueError, match=r"^target_url:"):
        TrafficSpec(**{**VALID, "target_url": url})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.4.5.6", "http://localhost:8080/", "https://[::1]:8443"],
)
def test_loopback_targets_are_accepted(url: str) -> None:
    """127.0.0.0/8, localhost and ::1 are all loopback."""
    assert TrafficSpec(**{**VALID, "target_url": url}).target_url == url  # type: ignore[arg-type]


def _decoy(
    tmp_path: Path, *, looks_like_locust: bool, ignore_signals: bool
) -> subprocess.Popen[bytes]:
    """A sleeping process, optionally with Locust's command line and deaf to SIGINT/SIGTERM."""
    code = "import signal, time\n"
    if ignore_signals:
        code += "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "open(__import__('sys').argv[1], 'w').close()\ntime.sleep(60)\n"
    ready = tmp_path / f"decoy-{time.monotonic_ns()}"
    extra = ["locust", str(traffic_runner.LOCUSTFILE)] if looks_like_locust else []
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(ready), *extra], start_new_session=True
    )
    assert wait_until(ready.exists, timeout=10)
    return process


def _forge_state(state_dir: Path, pid: int, create_time: float) -> None:
    state = {"started_at": time.time(), "processes": [
        {"role": "local", "pid": pid, "create_time": create_time}
    ]}  # fmt: skip
    (state_dir / "traffic.json").write_text(json.dumps(state))


def test_stop_never_signals_a_pid_that_is_not_our_locust(tmp_path: Path) -> None:
    """A recorded pid now held by another program, or started at another time, is left alone."""
    stranger = _decoy(tmp_path, looks_like_locust=False, ignore_signals=False)
    impostor = _decoy(tmp_path, looks_like_locust=True, ignore_signals=False)
    try:
        _forge_state(tmp_path, stranger.pid, psutil.Process(stranger.pid).create_time())
        assert stop_traffic(tmp_path, timeout=1) is not None
        real_start = psutil.Process(impostor.pid).create_time()
        _forge_state(tmp_path, impostor.pid, real_start - 100)
        assert stop_traffic(tmp_path, timeout=1) is not None
        assert stranger.poll() is None and impostor.poll() is None
    finally:
        for process in (stranger, impostor):
            process.kill()
            process.wait()


def test_stop_escalates_to_sigkill_within_the_timeout(tmp_path: Path) -> None:
    """A Locust that ignores SIGINT and SIGTERM is SIGKILLed once the timeout has passed."""
    stubborn = _decoy(tmp_path, looks_like_locust=True, ignore_signals=True)
    try:
        _forge_state(tmp_path, stubborn.pid, psutil.Process(stubborn.pid).create_time())
        started = time.monotonic()
        summary = stop_traffic(tmp_path, timeout=1.0)
        assert summary is not None and summary.source == "none"
        assert stubborn.wait(timeout=5) == -9
        assert time.monotonic() - started < 8
    finally:
        stubborn.kill()
        stubborn.wait()
