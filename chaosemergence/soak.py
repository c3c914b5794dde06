"""`make soak`: one system under steady traffic for minutes, faults every minute, the flagship
experiment back to back; does anything leak?

    python -m chaosemergence.soak [--minutes 10] [--json soak-results.json]

One reference system (the flagship's settings in the ci profile) takes steady Locust traffic
for the whole run. At the start of every minute a fault is injected (errors on every
dependency of one cell, in turn) and cleared a third of a minute later. Meanwhile the
flagship experiment (``experiments/validate-emergence-defenses.yaml``, ci profile) runs
back to back against the same system. Every few seconds the soak reads each process's
resident memory, open descriptors, threads and asyncio tasks (``GET /admin/process``).

It prints, per process (gateway, each cell): resident memory after warm-up (the first
minute, or a fifth of a short run) and at the end, open descriptors, threads and tasks;
and the errors nobody injected: users' failures while no fault was active (nor within a
grace period after one), admin calls that failed, exceptions in the system's log, and
experiment runs that did not complete or whose rollback failed. The goals: under 10%
memory growth after warm-up, no descriptor growth, no unexplained error. Everything it
started is stopped at the end (the system by SIGTERM, the traffic through its runner).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import httpx
import yaml

from chaosemergence.traffic import TrafficSpec, start_traffic, stop_traffic
from chaosemergence.traffic.runner import CSV_PREFIX, _read_periodic

__all__ = ["main", "run_soak"]

ROOT = Path(__file__).resolve().parent.parent
FLAGSHIP = ROOT / "experiments" / "validate-emergence-defenses.yaml"
PROFILE = ROOT / ".ci" / "profiles" / "ci.yaml"
SAMPLE_SECONDS = 2.0
# After a fault is cleared, users' failures for this long are still the fault's.
GRACE_SECONDS = 10.0
MEMORY_GROWTH_GOAL = 0.10
# Descriptors that come and go (a pooled connection opened or closed between two reads).
FD_SLACK = 3
ADMIN_TIMEOUT = 5.0
START_TIMEOUT = 90.0
# Between two flagship runs: a quiet window where users' failures are nobody's fault.
GAP_SECONDS = 10.0
LOG_ERROR = re.compile(r"Traceback|\bERROR\b|Exception")


@dataclass
class Sample:
    at: float
    processes: dict[str, dict[str, Any]]
    weakened: bool
    requests: int
    failures: int


@dataclass
class Soak:
    url: str
    admin_url: str
    token: str
    home: Path
    samples: list[Sample] = field(default_factory=list)
    admin_errors: list[str] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    faults: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """An admin call; a failure is recorded (an unexplained error) and returns None."""
        try:
            answer = httpx.request(
                method,
                f"{self.admin_url}{path}",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=ADMIN_TIMEOUT,
                **kwargs,
            )
        except httpx.HTTPError as error:
            with self.lock:
                self.admin_errors.append(f"{method} {path}: {type(error).__name__}")
            return None
        if answer.status_code >= 400:
            with self.lock:
                self.admin_errors.append(f"{method} {path}: {answer.status_code} {answer.text}")
            return None
        return answer.json()


def flagship_system(experiment: Path, profile: Path) -> tuple[int, dict[str, Any]]:
    """The cells and settings overrides the experiment's control would start its system with."""
    loaded = yaml.safe_load(experiment.read_text())
    variables = {
        k: v for k, v in loaded.get("configuration", {}).items() if not isinstance(v, dict)
    }
    variables.update(yaml.safe_load(profile.read_text()).get("configuration", {}))

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
            return variables[value[2:-1]]
        return value

    for control in loaded.get("controls", []):
        if control.get("name") == "reference-system":
            arguments = resolve(control["provider"].get("arguments", {}))
            return int(arguments.get("cells", 4)), dict(arguments.get("system") or {})
    return int(variables.get("cells", 4)), {}


def start_system(
    home: Path, port: int, cells: int, overrides: dict[str, Any]
) -> subprocess.Popen[bytes]:
    home.mkdir(parents=True, exist_ok=True)
    config = home / f"soak-system-{port}.json"
    config.write_text(json.dumps(overrides))
    log = (home / f"soak-serve-{port}.log").open("ab")
    env = {k: v for k, v in os.environ.items() if k != "CHAOSEMERGENCE_ADMIN_TOKEN"}
    command = [
        sys.executable, "-m", "chaosemergence.cli", "serve", "--cells", str(cells),
        "--port", str(port), "--state-dir", str(home), "--config", str(config),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the system exited with {process.returncode} at start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_system(process)
    raise RuntimeError("the system did not answer in time")


def stop_system(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def weakened(state: dict[str, Any] | None) -> bool:
    """Is any fault active, any defense off or the jitter removed (users may fail)?"""
    if state is None:
        return True
    gateway = state["gateway"]
    if gateway["shared_dependency"]["faults"] or gateway["lease"]["held"]:
        return True
    for cell in state["cells"]:
        body = cell.get("state") or {}
        if not cell["alive"] or "error" in body:
            return True
        if body["faults"] or body["jitter_removed"] or not all(body["defenses"].values()):
            return True
    return False


def processes(answer: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    if answer is None:
        return {}
    found = {"gateway": answer["gateway"]}
    for index, figures in answer["cells"].items():
        if "error" not in figures:
            found[f"cell {index}"] = figures
    return found


def run_experiments(soak: Soak, experiment: Path, profile: Path, until: float) -> None:
    """The flagship, back to back, until `until` (a run started before it is finished)."""
    env = {
        **os.environ,
        "CHAOSEMERGENCE_URL": soak.url,
        "CHAOSEMERGENCE_HOME": str(soak.home),
    }
    env.pop("CHAOSEMERGENCE_ADMIN_TOKEN", None)
    chaos = Path(sys.executable).parent / "chaos"
    number = 0
    last = 0.0
    # A run is started only if it can end before `until` (as long as the last one took).
    while time.time() + last < until:
        number += 1
        journal = soak.home / f"soak-journal-{number}.json"
        started = time.time()
        command = [str(chaos), "--no-version-check", "run", "--journal-path", str(journal)]
        command += ["--var-file", str(profile), str(experiment)]
        subprocess.run(
            command, env=env, cwd=soak.home, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=900, check=False,
        )  # fmt: skip
        soak.experiments.append(judge_journal(journal, started))
        time.sleep(GAP_SECONDS)
        last = time.time() - started


def judge_journal(path: Path, started: float) -> dict[str, Any]:
    """A run's outcome from its journal (chaos exits 0 on a failed action)."""
    try:
        journal = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"started": started, "status": "no journal", "problem": "no journal written"}
    failed = [
        run["activity"]["name"]
        for run in [*journal.get("run", []), *journal.get("rollbacks", [])]
        if run.get("status") != "succeeded"
    ]
    rollbacks = [r.get("status") for r in journal.get("rollbacks", [])]
    problem = None
    if journal.get("status") != "completed":
        problem = f"status {journal.get('status')}"
    elif failed:
        problem = f"failed activities {failed}"
    elif not rollbacks or any(s != "succeeded" for s in rollbacks):
        problem = f"rollbacks {rollbacks}"
    return {
        "started": started,
        "duration": round(journal.get("duration", 0.0), 1),
        "status": journal.get("status"),
        "deviated": journal.get("deviated"),
        "rollbacks": rollbacks,
        "problem": problem,
    }


def fault_cycle(soak: Soak, cells: int, period: float, until: float, stop: threading.Event) -> None:
    """A fault at the start of every period (errors in one cell, in turn), cleared after a
    third of it."""
    cycle = 0
    while not stop.is_set() and time.time() < until - period / 3:
        body = {"kind": "error", "percentage": 50, "duration": period / 3 + 5,
                "cells": [cycle % cells]}  # fmt: skip
        answer = soak.admin("POST", "/admin/faults", json=body)
        if answer is not None:
            soak.faults += 1
            if stop.wait(period / 3):
                break
            soak.admin("DELETE", "/admin/faults", params={"id": answer["id"]})
        cycle += 1
        stop.wait(period - period / 3)


def failures_so_far(traffic_dir: Path) -> int:
    """Users' failures so far, but for 429: a shed request is the load shedder's choice
    (the gateway counts it as "shed", not as a failure)."""
    try:
        with (traffic_dir / f"{CSV_PREFIX}_failures.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return 0
    return sum(
        int(row.get("Occurrences") or 0) for row in rows if "code=429" not in row.get("Error", "")
    )


def sample(soak: Soak, traffic_dir: Path) -> Sample:
    state = soak.admin("GET", "/admin/state")
    figures = processes(soak.admin("GET", "/admin/process"))
    totals = _read_periodic(traffic_dir / f"{CSV_PREFIX}_stats.csv") or (0, 0, 0.0, {})
    return Sample(time.time(), figures, weakened(state), totals[0], failures_so_far(traffic_dir))


def unexplained_failures(samples: list[Sample]) -> tuple[int, int]:
    """Users' failures between two samples while nothing was weakened, nor for GRACE_SECONDS
    before; and the requests in those quiet intervals."""
    failures = requests = 0
    last_weak = -1e18
    for before, after in itertools.pairwise(samples):
        if before.weakened:
            last_weak = before.at
        if after.weakened:
            last_weak = after.at
            continue
        if before.at - last_weak < GRACE_SECONDS:
            continue
        failures += max(0, after.failures - before.failures)
        requests += max(0, after.requests - before.requests)
    return failures, requests


def log_errors(home: Path, port: int) -> list[str]:
    path = home / f"soak-serve-{port}.log"
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if LOG_ERROR.search(line)]


def summarize(samples: list[Sample], warm_until: float) -> dict[str, dict[str, Any]]:
    """Per process: memory and descriptors after warm-up and at the end, threads, tasks."""
    names = sorted({name for s in samples for name in s.processes})
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        seen = [(s.at, s.processes[name]) for s in samples if name in s.processes]
        after = [f for at, f in seen if at >= warm_until] or [seen[-1][1]]
        # Compared: the first and the last stretch after warm-up (a tenth of it, 3 samples
        # at least). Memory: their medians. Descriptors: their floors, since connection
        # pools open and close descriptors with the load; a leak raises the floor.
        span = max(3, len(after) // 10)
        warm, end = after[:span], after[-span:]
        pids = sorted({f["pid"] for _, f in seen})
        rss_warm = median(f["rss_bytes"] for f in warm)
        rss_end = median(f["rss_bytes"] for f in end)
        fds_warm = min(f["open_fds"] for f in warm)
        fds_end = min(f["open_fds"] for f in end)
        growth = (rss_end - rss_warm) / rss_warm if rss_warm else 0.0
        table[name] = {
            "pids": pids,
            "rss_mb_after_warmup": round(rss_warm / 2**20, 1),
            "rss_mb_end": round(rss_end / 2**20, 1),
            "rss_growth": round(growth, 4),
            "rss_mb_peak": round(max(f["rss_bytes"] for _, f in seen) / 2**20, 1),
            "fds_after_warmup": fds_warm,
            "fds_end": fds_end,
            "threads_after_warmup": warm[0]["os_threads"],
            "threads_end": end[-1]["os_threads"],
            "tasks_after_warmup": warm[0]["tasks"],
            "tasks_end": end[-1]["tasks"],
            # A restarted process (another pid) is a new process: its growth is not a leak.
            "memory_goal_met": len(pids) > 1 or growth < MEMORY_GROWTH_GOAL,
            "fd_goal_met": len(pids) > 1 or fds_end - fds_warm <= FD_SLACK,
        }
    return table


def run_soak(
    minutes: float,
    *,
    port: int,
    home: Path,
    users: int = 20,
    experiment: Path = FLAGSHIP,
    profile: Path = PROFILE,
    run_experiments_too: bool = True,
) -> dict[str, Any]:
    """Run the soak; the results (also what `main` prints and writes)."""
    home = home.resolve()
    cells, overrides = flagship_system(FLAGSHIP, profile)
    started = time.time()
    duration = minutes * 60
    period = min(60.0, duration / 3)
    warm_until = started + min(60.0, duration / 5)
    until = started + duration
    process = start_system(home, port, cells, overrides)
    traffic_dir = home / "soak-traffic"
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        token = (home / f"admin-token-{port}").read_text().strip()
        admin_url = (home / f"admin-url-{port}").read_text().strip()
        soak = Soak(f"http://127.0.0.1:{port}", admin_url, token, home)
        spec = TrafficSpec(
            target_url=soak.url,
            users=users,
            spawn_rate=10,
            duration=min(3600.0, duration + 900),
            seed=11,
        )
        start_traffic(spec, traffic_dir)
        threads = [
            threading.Thread(target=fault_cycle, args=(soak, cells, period, until, stop)),
        ]
        if run_experiments_too:
            threads.append(
                threading.Thread(target=run_experiments, args=(soak, experiment, profile, until))
            )
        for thread in threads:
            thread.start()
        while time.time() < until or any(t.is_alive() for t in threads[1:]):
            soak.samples.append(sample(soak, traffic_dir))
            time.sleep(SAMPLE_SECONDS)
        soak.samples.append(sample(soak, traffic_dir))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=960)
        stop_traffic(traffic_dir)
        stop_system(process)
    pids = sorted({process.pid} | {f["pid"] for s in soak.samples for f in s.processes.values()})
    failures, quiet_requests = unexplained_failures(soak.samples)
    table = summarize(soak.samples, warm_until)
    exceptions = log_errors(home, port)
    bad_runs = [r for r in soak.experiments if r["problem"]]
    first = soak.samples[0].at if soak.samples else started
    series = {
        name: [
            [round(s.at - first), round(s.processes[name]["rss_bytes"] / 2**20, 1),
             s.processes[name]["open_fds"]]
            for s in soak.samples[::5]
            if name in s.processes
        ]
        for name in table
    }  # fmt: skip
    results = {
        "minutes": minutes,
        "started_at": started,
        "duration_seconds": round(time.time() - started, 1),
        "cells": cells,
        "users": users,
        "samples": len(soak.samples),
        "faults_injected": soak.faults,
        "processes": table,
        # Every 10 s: [seconds, resident MB, open descriptors] per process.
        "series": series,
        "experiments": soak.experiments,
        "errors": {
            "user_failures_outside_faults": failures,
            "requests_outside_faults": quiet_requests,
            "admin_calls_failed": soak.admin_errors,
            "exceptions_in_log": exceptions[:20],
            "experiment_runs_with_problems": len(bad_runs),
        },
        # Every process the soak saw (gateway, cells, restarted cells): none may be left.
        "stopped": {"pids": pids, "left_running": [p for p in pids if _running(p)]},
    }
    results["goals"] = {
        "memory_growth_under_10_percent": all(p["memory_goal_met"] for p in table.values()),
        "no_descriptor_growth": all(p["fd_goal_met"] for p in table.values()),
        "no_unexplained_error": failures == 0
        and not soak.admin_errors
        and not exceptions
        and not bad_runs,
    }
    return results


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def render(results: dict[str, Any]) -> str:
    lines = [
        f"soak: {results['minutes']} min, {results['cells']} cells, {results['users']} users, "
        f"{results['faults_injected']} faults, {len(results['experiments'])} flagship runs",
        f"{'process':10} {'RSS warm MB':>11} {'RSS end MB':>10} {'growth':>7} {'fds warm':>8} "
        f"{'fds end':>7} {'threads':>9} {'tasks':>9}",
    ]
    for name, p in results["processes"].items():
        lines.append(
            f"{name:10} {p['rss_mb_after_warmup']:>11} {p['rss_mb_end']:>10} "
            f"{p['rss_growth']:>7.1%} {p['fds_after_warmup']:>8} {p['fds_end']:>7} "
            f"{p['threads_after_warmup']:>4}/{p['threads_end']:<4} "
            f"{_tasks(p['tasks_after_warmup']):>4}/{_tasks(p['tasks_end']):<4}"
        )
    for number, run in enumerate(results["experiments"], 1):
        lines.append(
            f"flagship run {number}: {run['status']}, deviated {run.get('deviated')}, "
            f"rollbacks {run.get('rollbacks')}"
            + (f"  PROBLEM: {run['problem']}" if run["problem"] else "")
        )
    errors = results["errors"]
    lines.append(
        f"errors outside faults: {errors['user_failures_outside_faults']} user failures "
        f"(of {errors['requests_outside_faults']} requests), "
        f"{len(errors['admin_calls_failed'])} admin calls failed, "
        f"{len(errors['exceptions_in_log'])} exceptions logged, "
        f"{errors['experiment_runs_with_problems']} experiment runs with problems"
    )
    lines.append(
        "goals: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in results["goals"].items())
    )
    return "\n".join(lines)


def _tasks(value: Any) -> str:
    if isinstance(value, dict):
        return "+".join(str(v) for v in value.values())
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaosemergence.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("SOAK_HOME", "soak-home")))
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--experiment", type=Path, default=FLAGSHIP)
    parser.add_argument("--profile", type=Path, default=PROFILE)
    parser.add_argument("--no-experiments", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("soak-results.json"))
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        parser.error(f"--minutes must be in (0, 1440], got {args.minutes}")
    port = args.port or _free_port()
    results = run_soak(
        args.minutes, port=port, home=args.home, users=args.users,
        experiment=args.experiment, profile=args.profile,
        run_experiments_too=not args.no_experiments,
    )  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2))
    print(render(results))
    print(f"written: {args.json}")
    return 0 if all(results["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
