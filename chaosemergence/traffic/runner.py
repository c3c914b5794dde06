"""Start, stop and inspect Locust traffic as subprocesses, from any process, via a state directory.

Locust is never imported here (importing it monkey-patches the process with gevent): every run
is ``python -m locust`` subprocesses, each in its own session so its whole process group can
be signalled. A JSON state file (``<state_dir>/traffic.json``) records the pids and their start
times, so a different process (a rollback in another ``chaos`` invocation, say) can stop the
run; pids are only ever signalled after checking they still are the processes we started.

A run is bounded three ways: Locust stops by itself after ``duration``; :func:`stop_traffic`
escalates SIGINT -> SIGTERM -> SIGKILL within its timeout; and the locustfile quits on its own
at a hard deadline written into its environment, even if nobody ever calls stop.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import ipaddress
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from chaosemergence.traffic import profiles

# psutil comes with the [traffic] extra, like Locust: imported where a run is watched.
if TYPE_CHECKING:
    import psutil

__all__ = [
    "LOCUSTFILE",
    "EndpointSummary",
    "TrafficError",
    "TrafficRun",
    "TrafficSpec",
    "TrafficSummary",
    "start_traffic",
    "stop_traffic",
    "traffic_status",
]

LOCUSTFILE: Final[Path] = Path(__file__).resolve().parent / "locustfile.py"
"""The locustfile every run uses (next to this module, so it works from an installed package)."""

STATE_FILE: Final = "traffic.json"
CSV_PREFIX: Final = "locust"
#: Seconds `stop_traffic` takes at most: SIGINT (Locust's graceful stop, final stats
#: written) for the first 60%, then SIGTERM, then SIGKILL.
STOP_TIMEOUT: Final = 15.0
FINAL_STATS: Final = "locust_final"
"""Locust's ``--json-file`` prefix: it writes ``locust_final.json`` (it appends ``.json``)."""
READY_FILE: Final = "locust.ready"
HTML_REPORT: Final = "locust_report.html"
"""Locust's HTML report of the run, written by the master (or the single process) at its end."""
HOOKS: Final[Path] = Path(__file__).resolve().parent / "hooks.py"
"""Loaded beside a user's own locustfile: the hard deadline and the ready signal."""
LOCK_FILE: Final = "traffic.lock"

MAX_USERS: Final = 5000
MAX_DURATION_S: Final = 3600.0
MAX_WORKERS: Final = 8
LOCUST_STOP_TIMEOUT_S: Final = 5
"""Locust's ``--stop-timeout``: how long users get to finish their current task when stopping."""
WORKER_CONNECT_WAIT_S: Final = 30
"""Locust's ``--expect-workers-max-wait``: the master gives up (and exits) after this."""
DEADLINE_GRACE_S: Final = 30.0
"""Slack between the planned end of a run and the hard deadline at which it kills itself."""

_PACKAGE_ROOT: Final = Path(__file__).resolve().parents[2]
_STATE_VERSION: Final = 1

# Popen objects of the processes this process started, by pid, so that whichever call sees
# them finish first can reap them (a non-reaped child stays a zombie). Guarded by _CHILDREN_LOCK.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


class TrafficError(RuntimeError):
    """Traffic could not be started or stopped; the message names the processes and the cause."""


# -- the spec ---------------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name}: must be an integer, got {value!r}"
        raise ValueError(msg)
    if not low <= value <= high:
        msg = f"{name}: must be between {low} and {high}, got {value}"
        raise ValueError(msg)


def _check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"{name}: must be a finite number, got {value!r}"
        raise ValueError(msg)
    if above is not None and not value > above:
        msg = f"{name}: must be greater than {above:g}, got {value}"
        raise ValueError(msg)
    if low is not None and value < low:
        msg = f"{name}: must be at least {low:g}, got {value}"
        raise ValueError(msg)
    if high is not None and value > high:
        msg = f"{name}: must be at most {high:g}, got {value}"
        raise ValueError(msg)


def _is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_target_url(url: object, allow_remote: bool = False) -> None:
    if not isinstance(url, str):
        msg = f"target_url: must be a string, got {url!r}"
        raise ValueError(msg)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        msg = f"target_url: must be an http:// or https:// URL, got {url!r}"
        raise ValueError(msg)
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        msg = f"target_url: invalid URL {url!r}: {exc}"
        raise ValueError(msg) from None
    if not host:
        msg = f"target_url: has no host, got {url!r}"
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = f"target_url: must not have a query or fragment, got {url!r}"
        raise ValueError(msg)
    if not allow_remote and not _is_loopback(host):
        msg = (
            f"target_url: {host!r} is not a loopback host (127.0.0.0/8, localhost, ::1); "
            f"loading another machine needs allow_remote: true"
        )
        raise ValueError(msg)


@dataclass(frozen=True)
class TrafficSpec:
    """What traffic to run; validated on construction, errors name the offending field.

    ``users`` is the peak number of concurrent users (the ``spike`` shape runs
    ``ceil(users / spike_multiplier)`` outside its spike). ``duration`` is rounded up to whole
    seconds (Locust's ``--run-time`` takes integers). ``workers == 0`` runs one local Locust
    process; ``workers > 0`` runs a master and that many local workers.
    """

    target_url: str
    users: int
    spawn_rate: float
    duration: float
    shape: str = "steady"
    workers: int = 0
    seed: int = 42
    hot_keys: int = 20
    hot_share: float = 0.5
    wait_min: float = 0.5
    wait_max: float = 1.5
    population: int = 10_000
    sync_period: float = 1.0
    spike_multiplier: float = 4.0
    spike_fraction: float = 1 / 3
    request_timeout: float = 10.0
    # Weight of users' reads of the shared configuration (GET /users/{id}/config) against
    # profile 6, recommendations 3 and payments 1; 0 (the default) sends none.
    config_reads: int = 0
    # The user's own locustfile (a path); None runs the built-in one against the reference
    # system. Its users, tasks and wait times are its own; `shape` and the load fields above
    # only drive the built-in one.
    locustfile: str | None = None
    # Load a host that is not loopback (another machine): never by default.
    allow_remote: bool = False
    # A single path every user GETs instead of the mix ("" : the mix): how many requests per
    # second Locust itself can send (`make bench`, section loadgen).
    path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.allow_remote, bool):
            msg = f"allow_remote: must be true or false, got {self.allow_remote!r}"
            raise ValueError(msg)
        _check_target_url(self.target_url, self.allow_remote)
        if self.locustfile is not None:
            if not isinstance(self.locustfile, str) or not Path(self.locustfile).is_file():
                msg = f"locustfile: no such file {self.locustfile!r}"
                raise ValueError(msg)
            if self.shape != "steady":
                msg = (
                    f"shape: {self.shape!r} shapes the built-in locustfile only; with your own "
                    f"locustfile, put a LoadTestShape in it"
                )
                raise ValueError(msg)
        _check_int("users", self.users, 1, MAX_USERS)
        _check_number("spawn_rate", self.spawn_rate, above=0)
        _check_number("duration", self.duration, above=0, high=MAX_DURATION_S)
        if self.shape not in profiles.SHAPES:
            msg = f"shape: must be one of {sorted(profiles.SHAPES)}, got {self.shape!r}"
            raise ValueError(msg)
        _check_int("workers", self.workers, 0, MAX_WORKERS)
        _check_int("seed", self.seed, -(2**63), 2**63 - 1)
        _check_int("population", self.population, 1, 10**9)
        _check_int("hot_keys", self.hot_keys, 0, self.population)
        _check_number("hot_share", self.hot_share, low=0, high=1)
        _check_number("wait_min", self.wait_min, low=0, high=3600)
        _check_number("wait_max", self.wait_max, low=self.wait_min, high=3600)
        _check_number("sync_period", self.sync_period, above=0, high=3600)
        _check_number("spike_multiplier", self.spike_multiplier, low=1, high=1000)
        _check_number("spike_fraction", self.spike_fraction, above=0, high=1)
        _check_number("request_timeout", self.request_timeout, above=0, high=600)
        _check_int("config_reads", self.config_reads, 0, 100)
        if not isinstance(self.path, str) or (
            self.path and (not self.path.startswith("/") or any(c.isspace() for c in self.path))
        ):
            msg = f"path: must be empty or start with '/' and hold no spaces, got {self.path!r}"
            raise ValueError(msg)

    @property
    def run_time_s(self) -> int:
        """``duration`` as Locust's whole-second ``--run-time``."""
        return max(1, math.ceil(self.duration))

    def as_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict."""
        return asdict(self)


# -- summaries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointSummary:
    """Locust's final statistics for one endpoint (method + grouped name)."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    median_ms: float
    p99_ms: float

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class TrafficSummary:
    """What a run did, from the final statistics Locust wrote.

    ``source`` says which: ``"final"`` (``locust_final.json``, written when Locust shuts down
    gracefully: complete), ``"periodic"`` (``locust_stats.csv``, rewritten every second while
    it runs: misses up to the last second, used when Locust was killed) or ``"none"`` (zeros).
    ``endpoints`` is keyed by ``"<METHOD> <name>"``, e.g. ``"GET /users/[id]/profile"``;
    ``exit_codes`` maps each pid to its exit code, None where it was not this process's child.
    """

    requests: int
    failures: int
    rps: float
    endpoints: dict[str, EndpointSummary]
    exit_codes: dict[int, int | None]
    started_at: float
    stopped_at: float
    source: str = "none"

    @property
    def failure_ratio(self) -> float:
        """Failures per request (0.0 when there were no requests)."""
        return self.failures / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict (for a Chaos Toolkit journal)."""
        return {
            "requests": self.requests,
            "failures": self.failures,
            "failure_ratio": self.failure_ratio,
            "rps": self.rps,
            "endpoints": {key: value.as_dict() for key, value in self.endpoints.items()},
            "exit_codes": {str(pid): code for pid, code in self.exit_codes.items()},
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "source": self.source,
        }


def _float(value: str | None) -> float:
    """A CSV cell as a float; Locust writes "N/A" (or nothing) where it has no value."""
    if value is None:
        return 0.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def _percentile(response_times: dict[int, int], count: int, percent: float) -> float:
    """Locust's own percentile over its rounded response-time histogram (ms)."""
    target = int(count * percent)
    processed = 0
    for response_time in sorted(response_times, reverse=True):
        processed += response_times[response_time]
        if count - processed <= target:
            return float(response_time)
    return 0.0


def _rate(count: int, first: float | None, last: float | None) -> float:
    if not count or first is None or last is None or last <= first:
        return 0.0
    return count / (last - first)


def _read_final(path: Path) -> tuple[int, int, float, dict[str, EndpointSummary]] | None:
    """Totals and endpoints from Locust's ``--json-file`` output, None if absent or unreadable."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list):
        return None
    endpoints: dict[str, EndpointSummary] = {}
    requests = failures = 0
    firsts: list[float] = []
    lasts: list[float] = []
    for entry in entries:
        method, name = str(entry.get("method") or ""), str(entry.get("name") or "")
        count, failed = int(entry.get("num_requests") or 0), int(entry.get("num_failures") or 0)
        timed = count - int(entry.get("num_none_requests") or 0)
        times = {int(float(k)): int(v) for k, v in (entry.get("response_times") or {}).items()}
        first, last = entry.get("start_time"), entry.get("last_request_timestamp")
        if first is not None and last is not None:
            firsts.append(float(first))
            lasts.append(float(last))
        endpoints[f"{method} {name}"] = EndpointSummary(
            method=method,
            name=name,
            requests=count,
            failures=failed,
            rps=_rate(count, first, last),
            median_ms=_percentile(times, timed, 0.5),
            p99_ms=_percentile(times, timed, 0.99),
        )
        requests += count
        failures += failed
    rps = _rate(requests, min(firsts, default=None), max(lasts, default=None))
    return requests, failures, rps, endpoints


def _read_periodic(path: Path) -> tuple[int, int, float, dict[str, EndpointSummary]] | None:
    """Totals and endpoints from Locust's ``--csv`` stats file, None if absent."""
    requests = failures = 0
    rps = 0.0
    endpoints: dict[str, EndpointSummary] = {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return None
    for row in rows:
        count = int(_float(row.get("Request Count")))
        failed = int(_float(row.get("Failure Count")))
        if row.get("Name") == "Aggregated":
            requests, failures, rps = count, failed, _float(row.get("Requests/s"))
            continue
        method, name = row.get("Type") or "", row.get("Name") or ""
        endpoints[f"{method} {name}"] = EndpointSummary(
            method=method,
            name=name,
            requests=count,
            failures=failed,
            rps=_float(row.get("Requests/s")),
            median_ms=_float(row.get("50%")),
            p99_ms=_float(row.get("99%")),
        )
    return requests, failures, rps, endpoints


def _read_summary(
    state_dir: Path, exit_codes: dict[int, int | None], started_at: float
) -> TrafficSummary:
    source = "final"
    found = _read_final(state_dir / f"{FINAL_STATS}.json")
    if found is None:
        source = "periodic"
        found = _read_periodic(state_dir / f"{CSV_PREFIX}_stats.csv")
    if found is None:
        source, found = "none", (0, 0, 0.0, {})
    requests, failures, rps, endpoints = found
    return TrafficSummary(
        requests=requests,
        failures=failures,
        rps=rps,
        endpoints=endpoints,
        exit_codes=exit_codes,
        started_at=started_at,
        stopped_at=time.time(),
        source=source,
    )


# -- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    """One Locust process as recorded in the state file."""

    role: str  # "local", "master" or "worker-<n>"
    pid: int
    create_time: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Proc:
        create_time = data.get("create_time")
        return cls(
            role=str(data["role"]),
            pid=int(data["pid"]),
            create_time=float(create_time) if create_time is not None else None,
        )


def _reap() -> None:
    """Collect exit statuses of our own children that have finished (no zombies left behind)."""
    with _CHILDREN_LOCK:
        for popen in _CHILDREN.values():
            popen.poll()


def _exit_code(pid: int) -> int | None:
    with _CHILDREN_LOCK:
        popen = _CHILDREN.get(pid)
        return popen.poll() if popen is not None else None


def _forget(pids: list[int]) -> None:
    with _CHILDREN_LOCK:
        for pid in pids:
            _CHILDREN.pop(pid, None)


def _ours(proc: _Proc) -> psutil.Process | None:
    """The live process behind ``proc``, or None if it is gone, a zombie or a reused pid."""
    import psutil

    try:
        process = psutil.Process(proc.pid)
        if proc.create_time is not None and abs(process.create_time() - proc.create_time) > 0.05:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    # Ours run the built-in locustfile, or a user's beside the hooks (`-f theirs.py,HOOKS`).
    ours = any(part == str(LOCUSTFILE) or part.endswith(f",{HOOKS}") for part in cmdline)
    if "locust" not in cmdline or not ours:
        return None
    return process


def _alive(proc: _Proc) -> bool:
    return _ours(proc) is not None


def _signal(proc: _Proc, signum: signal.Signals) -> None:
    """Send ``signum`` to the process group of ``proc`` if it still is our Locust process."""
    if _ours(proc) is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Each Locust process leads its own session (start_new_session=True): pgid == pid.
        os.killpg(proc.pid, signum)


def _wait_gone(procs: list[_Proc], until: float) -> list[_Proc]:
    """Wait until every process in ``procs`` is gone or ``until`` (monotonic); return survivors."""
    while True:
        _reap()
        alive = [proc for proc in procs if _alive(proc)]
        if not alive or time.monotonic() >= until:
            return alive
        time.sleep(0.05)


_KILL_WAIT_S: Final = 5.0
"""How long a SIGKILLed process may take to disappear before we call it a survivor."""


def _escalate(procs: list[_Proc], plan: list[tuple[signal.Signals, float]]) -> list[_Proc]:
    """Send each signal of ``plan`` to the live ``procs`` and wait until its monotonic time.

    After the plan, survivors get SIGKILL; return the processes that outlive even that.
    """
    alive = [proc for proc in procs if _alive(proc)]
    for signum, until in plan:
        if not alive:
            return []
        for proc in alive:
            _signal(proc, signum)
        alive = _wait_gone(alive, until)
    for proc in alive:
        _signal(proc, signal.SIGKILL)
    return _wait_gone(alive, time.monotonic() + _KILL_WAIT_S)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the state file ---------------------------------------------------------------------------


def _state_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / STATE_FILE


def _read_state(state_dir: Path | str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(_state_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"cannot read traffic state {_state_path(state_dir)}: {exc}"
        raise TrafficError(msg) from exc
    return data


def _write_state(state_dir: Path, data: dict[str, Any]) -> None:
    path = _state_path(state_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _procs_of(state: dict[str, Any]) -> list[_Proc]:
    """All processes of a state, the master (or the local process) first."""
    return [_Proc.from_dict(item) for item in state.get("processes", [])]


# -- the public API ---------------------------------------------------------------------------


@dataclass
class TrafficRun:
    """A started run: its spec, state directory, pids and (in the starting process) its Popens."""

    spec: TrafficSpec
    state_dir: Path
    pids: list[int]
    started_at: float
    deadline: float
    master_port: int | None = None
    _popens: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @property
    def running(self) -> bool:
        """True while any of the run's processes is alive."""
        return bool(traffic_status(self.state_dir)["running"])

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every process of the run has exited; True if they all did in time."""
        until = None if timeout is None else time.monotonic() + timeout
        for popen in self._popens:
            remaining = None if until is None else max(0.0, until - time.monotonic())
            try:
                popen.wait(remaining)
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self, timeout: float = STOP_TIMEOUT) -> TrafficSummary | None:
        """Stop the run (see :func:`stop_traffic`) and return its summary."""
        return stop_traffic(self.state_dir, timeout)


def _environment(spec: TrafficSpec, deadline: float, ready_file: Path) -> dict[str, str]:
    # Locust reads LOCUST_* variables as options (and LOCUST_SKIP_MONKEY_PATCH...): the run is
    # what the spec says, not what the caller's environment happens to hold.
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    env.update(
        {
            profiles.ENV_SHAPE: spec.shape,
            profiles.ENV_SEED: str(spec.seed),
            profiles.ENV_POPULATION: str(spec.population),
            profiles.ENV_HOT_KEYS: str(spec.hot_keys),
            profiles.ENV_HOT_SHARE: repr(float(spec.hot_share)),
            profiles.ENV_WAIT_MIN: repr(float(spec.wait_min)),
            profiles.ENV_WAIT_MAX: repr(float(spec.wait_max)),
            profiles.ENV_SYNC_PERIOD: repr(float(spec.sync_period)),
            profiles.ENV_SPIKE_MULTIPLIER: repr(float(spec.spike_multiplier)),
            profiles.ENV_SPIKE_FRACTION: repr(float(spec.spike_fraction)),
            profiles.ENV_REQUEST_TIMEOUT: repr(float(spec.request_timeout)),
            profiles.ENV_CONFIG_READS: str(spec.config_reads),
            profiles.ENV_PATH: spec.path,
            profiles.ENV_DEADLINE: repr(deadline),
            profiles.ENV_READY_FILE: str(ready_file),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The locustfile imports chaosemergence.traffic.profiles: make sure the package is
    # importable in the child whatever its working directory.
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(_PACKAGE_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(_PACKAGE_ROOT), *paths])
    return env


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _launch(
    role: str, command: list[str], env: dict[str, str], state_dir: Path
) -> tuple[_Proc, subprocess.Popen[bytes]]:
    log_path = state_dir / f"locust-{role}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=state_dir,
            env=env,
            start_new_session=True,
        )
    with _CHILDREN_LOCK:
        _CHILDREN[popen.pid] = popen
    import psutil

    try:
        create_time: float | None = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = None
    return _Proc(role=role, pid=popen.pid, create_time=create_time), popen


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``state_dir`` (start and stop from several processes serialize).

    The lock file is never deleted: deleting a flock'ed file would let two holders coexist.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_traffic(
    spec: TrafficSpec, state_dir: Path | str, *, ready_timeout: float | None = 30.0
) -> TrafficRun:
    """Start Locust traffic as subprocesses and record them in ``<state_dir>/traffic.json``.

    With ``ready_timeout`` (seconds), wait until Locust has started the test (every worker
    connected, users spawning); if a process exits first or the time runs out, stop whatever
    was started and raise :class:`TrafficError` with the end of its log. ``None`` returns at
    once. Raises :class:`TrafficError` if traffic is already running in ``state_dir``.
    """
    if not isinstance(spec, TrafficSpec):
        msg = f"spec: must be a TrafficSpec, got {type(spec).__name__}"
        raise TypeError(msg)
    state_dir = Path(state_dir).resolve()
    with _locked(state_dir):
        run, procs = _start(spec, state_dir)
    if ready_timeout is not None:
        _wait_ready(run, procs, state_dir / READY_FILE, ready_timeout)
    return run


def _start(spec: TrafficSpec, state_dir: Path) -> tuple[TrafficRun, list[_Proc]]:
    """Launch the processes and write the state file; the caller holds the lock."""
    previous = traffic_status(state_dir)
    if previous["running"]:
        msg = (
            f"traffic is already running from {state_dir} (pids {previous['alive_pids']}); "
            f"stop it first"
        )
        raise TrafficError(msg)
    if previous["state_file"]:
        # A finished run nobody stopped: clear it so its results cannot be mistaken for ours.
        _stop(state_dir, timeout=5)
    for stale in [
        *state_dir.glob(f"{CSV_PREFIX}_*.csv"),
        state_dir / f"{FINAL_STATS}.json",
        state_dir / HTML_REPORT,
    ]:
        stale.unlink(missing_ok=True)
    ready_file = state_dir / READY_FILE
    ready_file.unlink(missing_ok=True)

    started_at = time.time()
    worker_wait = WORKER_CONNECT_WAIT_S if spec.workers else 0
    deadline = started_at + spec.run_time_s + worker_wait + LOCUST_STOP_TIMEOUT_S + DEADLINE_GRACE_S
    env = _environment(spec, deadline, ready_file)
    locustfiles = (
        f"{Path(spec.locustfile).resolve()},{HOOKS}" if spec.locustfile else str(LOCUSTFILE)
    )
    base = [sys.executable, "-m", "locust", "-f", locustfiles, "--loglevel", "WARNING"]
    main_command = [
        *base,
        "--headless",
        "--host", spec.target_url.rstrip("/"),
        "--users", str(spec.users),
        "--spawn-rate", repr(float(spec.spawn_rate)),
        "--run-time", f"{spec.run_time_s}s",
        "--stop-timeout", str(LOCUST_STOP_TIMEOUT_S),
        "--csv", str(state_dir / CSV_PREFIX),
        "--json-file", str(state_dir / FINAL_STATS),
        "--html", str(state_dir / HTML_REPORT),
        "--only-summary",
    ]  # fmt: skip
    master_port: int | None = None
    if spec.workers:
        master_port = _free_port()
        main_command += [
            "--master",
            "--master-bind-host", "127.0.0.1",
            "--master-bind-port", str(master_port),
            "--expect-workers", str(spec.workers),
            "--expect-workers-max-wait", str(WORKER_CONNECT_WAIT_S),
        ]  # fmt: skip

    procs: list[_Proc] = []
    popens: list[subprocess.Popen[bytes]] = []
    state: dict[str, Any] = {
        "version": _STATE_VERSION,
        "spec": spec.as_dict(),
        "started_at": started_at,
        "deadline": deadline,
        "master_port": master_port,
        "locustfile": locustfiles,
        "processes": [],
    }
    failed = True
    try:
        proc, popen = _launch("master" if spec.workers else "local", main_command, env, state_dir)
        procs.append(proc)
        popens.append(popen)
        for index in range(spec.workers):
            worker_command = [
                *base,
                "--worker",
                "--master-host", "127.0.0.1",
                "--master-port", str(master_port),
            ]  # fmt: skip
            proc, popen = _launch(f"worker-{index + 1}", worker_command, env, state_dir)
            procs.append(proc)
            popens.append(popen)
        failed = False
    finally:
        # Record whatever did start, so that a stop can always clean up.
        state["processes"] = [proc.as_dict() for proc in procs]
        _write_state(state_dir, state)
        if failed:
            _stop(state_dir, timeout=10)

    run = TrafficRun(
        spec=spec,
        state_dir=state_dir,
        pids=[proc.pid for proc in procs],
        started_at=started_at,
        deadline=deadline,
        master_port=master_port,
        _popens=popens,
    )
    return run, procs


def _wait_ready(run: TrafficRun, procs: list[_Proc], ready_file: Path, timeout: float) -> None:
    """Return once Locust signalled the test started; else stop the run and raise."""
    until = time.monotonic() + timeout
    while not ready_file.exists():
        exited = [(proc, popen) for proc, popen in zip(procs, run._popens, strict=True)
                  if popen.poll() is not None]  # fmt: skip
        if exited or time.monotonic() >= until:
            if ready_file.exists():
                return
            stop_traffic(run.state_dir, timeout=10)
            if exited:
                proc, popen = exited[0]
                cause = f"Locust {proc.role} (pid {proc.pid}) exited with code {popen.returncode}"
                log = run.state_dir / f"locust-{proc.role}.log"
            else:
                cause = f"Locust did not start the test within {timeout:g}s"
                log = run.state_dir / f"locust-{procs[0].role}.log"
            msg = f"traffic to {run.spec.target_url} failed to start: {cause}\n{_log_tail(log)}"
            raise TrafficError(msg)
        time.sleep(0.05)


def stop_traffic(state_dir: Path | str, timeout: float = STOP_TIMEOUT) -> TrafficSummary | None:
    """Stop the traffic recorded in ``state_dir`` and return its summary; None if there is none.

    Works from any process: it reads the pids from the state file and only signals processes
    that still are the Locust processes it started (same pid, same start time, same command).
    The master (or the local process) gets SIGINT, then SIGTERM, then SIGKILL, within about
    ``timeout`` seconds; workers get time to follow the master's quit message, then SIGTERM and
    SIGKILL. A run that already ended by itself is summarized and cleared the same way.
    Raises :class:`TrafficError` if a process survives SIGKILL (the state file is kept).
    """
    state_dir = Path(state_dir).resolve()
    if not _state_path(state_dir).exists():
        return None
    with _locked(state_dir):
        return _stop(state_dir, timeout)


def _stop(state_dir: Path, timeout: float) -> TrafficSummary | None:
    """Stop and summarize the recorded run; the caller holds the lock."""
    state = _read_state(state_dir)
    if state is None:
        return None
    procs = _procs_of(state)
    main, workers = procs[:1], procs[1:]
    start = time.monotonic()
    # SIGINT is Locust's graceful stop (final stats written). SIGTERM is only graceful once a
    # headless shape run has finished: during it Locust has not installed its SIGTERM handler yet.
    survivors = _escalate(
        main, [(signal.SIGINT, start + timeout * 0.6), (signal.SIGTERM, start + timeout * 0.8)]
    )
    # Workers quit when the master tells them to; give them a moment before signalling them.
    end = max(start + timeout, time.monotonic() + 2.0)
    workers = _wait_gone(workers, min(end, time.monotonic() + 5.0))
    survivors += _escalate(workers, [(signal.SIGTERM, end)])
    if survivors:
        described = ", ".join(f"{proc.role} pid {proc.pid}" for proc in survivors)
        msg = f"could not stop Locust processes from {state_dir}: {described} survived SIGKILL"
        raise TrafficError(msg)
    pids = [proc.pid for proc in procs]
    exit_codes = {pid: _exit_code(pid) for pid in pids}
    _forget(pids)
    summary = _read_summary(state_dir, exit_codes, float(state.get("started_at", 0.0)))
    _state_path(state_dir).unlink(missing_ok=True)
    (state_dir / READY_FILE).unlink(missing_ok=True)
    return summary


def traffic_status(state_dir: Path | str) -> dict[str, Any]:
    """Whether traffic recorded in ``state_dir`` is running, with its pids and which are alive.

    Keys: ``running`` (bool), ``state_file`` (bool: a run is recorded, finished or not),
    ``pids`` (role -> pid), ``alive_pids``, ``started_at``, ``deadline``, ``overdue`` (alive past
    its hard deadline) and ``spec``.
    """
    state = _read_state(Path(state_dir))
    if state is None:
        return {
            "running": False,
            "state_file": False,
            "pids": {},
            "alive_pids": [],
            "started_at": None,
            "deadline": None,
            "overdue": False,
            "spec": None,
        }
    _reap()
    procs = _procs_of(state)
    alive = [proc.pid for proc in procs if _alive(proc)]
    deadline = state.get("deadline")
    return {
        "running": bool(alive),
        "state_file": True,
        "pids": {proc.role: proc.pid for proc in procs},
        "alive_pids": alive,
        "started_at": state.get("started_at"),
        "deadline": deadline,
        "overdue": bool(alive) and deadline is not None and time.time() > float(deadline),
        "spec": state.get("spec"),
    }
