"""Driving `wrk` (Debian's package) for a bounded time on loopback, and reading its report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WrkResult", "WrkUnavailable", "parse", "run_wrk"]

# Spreads requests over a list of users: `wrk ... -- /profile 1 2 3`; a path starting with
# "/" is the route after /users/<id> (or the whole path when no users are given).
_SCRIPT = """
local users, path, n = {}, "/", 0
init = function(args)
  for _, a in ipairs(args) do
    if a:sub(1, 1) == "/" then path = a else users[#users + 1] = a end
  end
end
request = function()
  n = n + 1
  if #users == 0 then return wrk.format("GET", path) end
  return wrk.format("GET", "/users/" .. users[(n % #users) + 1] .. path)
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


class WrkUnavailable(RuntimeError):
    """`wrk` is not installed (Debian: apt-get install -y wrk)."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured: only 2xx answers count as goodput."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def goodput(self) -> float:
        """2xx answers per second."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk report has no {percentile}% latency line")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse(text: str) -> WrkResult:
    """A wrk report (run with --latency) as numbers; ValueError naming the missing line."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    if done is None:
        raise ValueError("wrk report has no 'N requests in T' line")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * _UNITS[done.group(3)] / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        p50_ms=_latency(text, "50"),
        p99_ms=_latency(text, "99"),
    )


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    path: str = "/",
    users: list[str] | None = None,
    threads: int = 2,
) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` (bounded: it is killed a while after)."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError(f"the benchmarks drive loopback only, got {url}")
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkUnavailable("wrk is not installed (Debian: apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="chaosemergence-wrk-") as tmp:
        script = Path(tmp) / "users.lua"
        script.write_text(_SCRIPT)
        command = [
            binary,
            f"-t{max(1, min(threads, connections))}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "2s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            path,
            *(users or []),
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()[:300]}")
    return parse(done.stdout)
