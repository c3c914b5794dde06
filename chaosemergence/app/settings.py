"""Settings of the reference system: the one place that reads its configuration.

Capacities and service times are configuration, not CPU speed, so that the feedback
loops (retries on a saturated dependency, work for callers who gave up) emerge at
modest request rates on any machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from chaosemergence.contract import (
    MAX_CELLS,
    InvalidField,
    admin_url_file_for_port,
    check,
    default_state_dir,
    lease_seconds_schema,
    token_file_for_port,
)

__all__ = [
    "DependencySettings",
    "SystemSettings",
    "admin_url_file_for_port",
    "default_state_dir",
    "is_loopback",
    "local_address",
    "remove_if_owned",
    "token_file_for_port",
]
# The state files the extension reads (token, admin URL) and the limits are the contract's;
# re-exported here for the reference system's own modules.


# A cell's address: scheme, host (a name, an IPv4 address or a bracketed IPv6 one) and port.
CELL_URL = re.compile(r"http://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


@dataclass(frozen=True)
class DependencySettings:
    """How one simulated downstream server behaves: finite workers, a queue, a service time."""

    concurrency: int = 8
    queue_limit: int = 64
    service_time_ms: float = 20.0
    # Spread of service times (coefficient of variation): 1.0 is exponential; lower values
    # (a gamma distribution) model a server whose work is more uniform.
    service_time_cv: float = 1.0
    # Timeout a caller (the cell) gives each attempt.
    call_timeout_ms: float = 250.0
    # A request hit by a timeout fault hangs a worker this long (until the server gives up)
    # and its answer is lost: the caller only sees its own deadline pass.
    hang_ms: float = 1000.0
    # A worker that takes a queued call whose caller has already given up serves it anyway
    # (True: wasted work, as a server that never looks at its callers' deadlines does);
    # False: it drops the call before starting it (a deadline check at dequeue).
    serve_abandoned: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.serve_abandoned, bool):
            raise ValueError(f"serve_abandoned must be a boolean, got {self.serve_abandoned!r}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {self.queue_limit}")
        if self.service_time_ms <= 0:
            raise ValueError(f"service_time_ms must be > 0, got {self.service_time_ms}")
        if self.call_timeout_ms <= 0:
            raise ValueError(f"call_timeout_ms must be > 0, got {self.call_timeout_ms}")
        if not 0 < self.service_time_cv <= 3:
            raise ValueError(f"service_time_cv must be in (0, 3], got {self.service_time_cv}")
        if self.hang_ms < 0:
            raise ValueError(f"hang_ms must be >= 0, got {self.hang_ms}")


def _default_dependencies() -> dict[str, DependencySettings]:
    return {
        "database": DependencySettings(
            concurrency=8, queue_limit=128, service_time_ms=15.0, call_timeout_ms=100.0
        ),
        "payment_provider": DependencySettings(
            concurrency=4, queue_limit=64, service_time_ms=40.0, call_timeout_ms=300.0
        ),
        "recommendations": DependencySettings(
            concurrency=4, queue_limit=64, service_time_ms=30.0, call_timeout_ms=200.0
        ),
    }


def _default_shared_dependency() -> DependencySettings:
    return DependencySettings(
        concurrency=4, queue_limit=64, service_time_ms=20.0, call_timeout_ms=250.0
    )


@dataclass(frozen=True)
class SystemSettings:
    """Everything a gateway and its cells need to start."""

    cells: int = 10
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    seed: int = 7
    dependencies: dict[str, DependencySettings] = field(default_factory=_default_dependencies)
    cache_ttl_seconds: float = 60.0
    refresh_interval_seconds: float = 2.0
    # Gateway -> cell request timeout; a cell that does not answer in time is a failed request.
    cell_timeout_seconds: float = 5.0
    users_per_cell_seeded: int = 0
    # Load shedding: what one cell is sized for (the complexity budget's capacities).
    cell_request_capacity: float = 200.0  # user requests per second
    cell_user_capacity: float = 2000.0  # distinct users in a 10 s window
    cell_data_capacity_bytes: float = 1_000_000.0  # response bytes per second
    # Probabilistic early expiration (XFetch) of the profile cache.
    xfetch_beta: float = 1.0
    # The metastable signature's latency clause (the seed's 500 ms): a p99 above it, at low
    # load, counts as "stuck". Raise it where the healthy tail is slower by design (a cold
    # cache fill of several round trips), or the detector mistakes the normal tail for a
    # metastable state and its recovery refuses healthy traffic.
    metastable_p99_ms: float = 500.0
    # Staged recovery from a metastable state (the seed uses 30 s steps; see decisions.md).
    recovery_pause_seconds: float = 2.0
    recovery_step_seconds: float = 1.5  # 2 s + 7 steps: traffic fully back in 12.5 s
    # How long a caller waits for a computation it shares (request coalescing), at least:
    # the seed's 10 s in the weekly profile; never less than one computation may take.
    coalesce_timeout_seconds: float = 2.0
    # Death spiral: each cell's memory limit (ballast + request working set), its GC model
    # and guardrails.
    cell_memory_limit_mb: float = 256.0
    request_working_set_kb: float = 256.0
    gc_pause_max_ms: float = 200.0
    memory_shed_at: float = 0.5
    memory_refuse_at: float = 0.9
    restart_horizon_seconds: float = 3.0
    # Synchronization: the dependency every cell shares (hosted by the gateway), the cells'
    # periodic job that polls it, and how the gateway measures their correlation.
    shared_dependency: DependencySettings = field(default_factory=_default_shared_dependency)
    shared_poll_interval_seconds: float = 0.5
    correlation_bucket_seconds: float = 0.0625
    correlation_window_seconds: float = 10.0  # what the control loops act on
    # Cascade: each cell's own worker pool (0 = unlimited); every request holds a worker
    # while it is handled, plus a fixed cost, and a full waiting line is refused at once.
    cell_workers: int = 0
    cell_request_cost_ms: float = 0.0
    cell_queue_limit: int = 256
    # Retry layers: attempts per dependency call in a cell (1 = no retries), and attempts per
    # user request at the gateway (towards the home cell, or failover candidates). The same
    # layers run with defenses on and off; the defenses govern them (budgets, breaker).
    retry_attempts: int = 3
    gateway_retry_attempts: int = 3
    # TEST ONLY, unsafe: cells acknowledge a payment before its write commits (write-behind,
    # committed about 1 s later), so a crash loses acknowledged payments. It exists to
    # prove the lost_writes probe can fail; each cell logs a warning on its first such write.
    unsafe_ack_before_commit: bool = False
    # Seconds a change that weakens the system (defenses off, jitter removed) lasts unless
    # renewed: then every defense goes back on by itself (docs/trust.md).
    lease_seconds: float = 30.0
    # TEST ONLY: each user request the gateway forwards holds its data-plane event loop this
    # long (busy, as a loop saturated by traffic is), to prove the admin API does not wait
    # on it (docs/trust.md).
    gateway_stall_ms: float = 0.0
    # Thundering herd: database round trips one profile computation (a cache fill) makes,
    # one after the other (the user row, then what the profile aggregates).
    profile_queries: int = 1
    # Synchronization: each cell runs this many configuration pollers (one per namespace,
    # each its own timer with its own random phase); a failed poll is retried after a fixed
    # delay; users' configuration reads through the gateway wait at most this long.
    shared_pollers_per_cell: int = 1
    shared_poll_retry_seconds: float = 0.2
    shared_read_timeout_ms: float = 250.0
    # Cells that run elsewhere (`chaosemergence cell` on this or other hosts), by address:
    # the gateway starts no cell process and routes to these, in order (docs/scaling.md).
    # Empty: the gateway starts `cells` local processes itself.
    cell_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.cells <= MAX_CELLS:
            raise ValueError(f"cells must be between 1 and {MAX_CELLS}, got {self.cells}")
        if isinstance(self.cell_urls, str) or not all(
            isinstance(url, str) and CELL_URL.fullmatch(url) for url in self.cell_urls
        ):
            raise ValueError(
                f"cell_urls must be a list of http://host:port addresses, got {self.cell_urls!r}"
            )
        if self.cell_urls and len(self.cell_urls) != self.cells:
            raise ValueError(
                f"cells must be the number of cell_urls ({len(self.cell_urls)}), got {self.cells}"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if not is_loopback(self.host):
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise ValueError(
                    f"host must be localhost or an IP address, got {self.host!r}"
                ) from None
        for name in ("retry_attempts", "gateway_retry_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10:
                raise ValueError(f"{name} must be an integer in 1..10, got {value!r}")
        for name in ("cell_workers", "cell_request_cost_ms", "cell_queue_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        positive = (
            "cache_ttl_seconds",
            "refresh_interval_seconds",
            "cell_timeout_seconds",
            "cell_request_capacity",
            "cell_user_capacity",
            "cell_data_capacity_bytes",
            "xfetch_beta",
            "metastable_p99_ms",
            "recovery_pause_seconds",
            "recovery_step_seconds",
            "coalesce_timeout_seconds",
            "cell_memory_limit_mb",
            "gc_pause_max_ms",
            "restart_horizon_seconds",
            "shared_poll_interval_seconds",
            "correlation_bucket_seconds",
            "correlation_window_seconds",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        if self.request_working_set_kb < 0:
            raise ValueError(
                f"request_working_set_kb must be >= 0, got {self.request_working_set_kb}"
            )
        if not 0 < self.memory_shed_at < self.memory_refuse_at <= 1:
            raise ValueError(
                "need 0 < memory_shed_at < memory_refuse_at <= 1, got "
                f"{self.memory_shed_at} and {self.memory_refuse_at}"
            )
        if self.correlation_window_seconds < 2 * self.correlation_bucket_seconds:
            raise ValueError("correlation_window_seconds must cover at least 2 buckets")
        if not isinstance(self.unsafe_ack_before_commit, bool):
            raise ValueError(
                f"unsafe_ack_before_commit must be a boolean, got {self.unsafe_ack_before_commit!r}"
            )
        try:
            check(lease_seconds_schema(), self.lease_seconds, "lease_seconds")
        except InvalidField as error:
            raise ValueError(str(error)) from None
        stall = self.gateway_stall_ms
        if isinstance(stall, bool) or not isinstance(stall, int | float) or not 0 <= stall <= 5000:
            raise ValueError(f"gateway_stall_ms must be a number in [0, 5000], got {stall!r}")
        if (
            isinstance(self.profile_queries, bool)
            or not isinstance(self.profile_queries, int)
            or not 1 <= self.profile_queries <= 10
        ):
            raise ValueError(
                f"profile_queries must be an integer in 1..10, got {self.profile_queries!r}"
            )
        pollers = self.shared_pollers_per_cell
        # 64 pollers, at an experiment's largest scale (chaosemergence.scaling): 20 x 64.
        if isinstance(pollers, bool) or not isinstance(pollers, int) or not 1 <= pollers <= 1280:
            raise ValueError(
                f"shared_pollers_per_cell must be an integer in 1..1280, got {pollers!r}"
            )
        for name in ("shared_poll_retry_seconds", "shared_read_timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")

    def with_overrides(self, **changes: Any) -> SystemSettings:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SystemSettings:
        deps = {k: DependencySettings(**v) for k, v in data.get("dependencies", {}).items()}
        rest = {k: v for k, v in data.items() if k not in ("dependencies", "shared_dependency")}
        rest["state_dir"] = Path(rest["state_dir"])
        if "shared_dependency" in data:
            rest["shared_dependency"] = DependencySettings(**data["shared_dependency"])
        if "cell_urls" in rest and isinstance(rest["cell_urls"], list):
            rest["cell_urls"] = tuple(rest["cell_urls"])
        return cls(dependencies=deps or _default_dependencies(), **rest)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_address(host: str) -> str:
    """Where processes on this machine reach a server bound to `host` (wildcards: loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def remove_if_owned(path: Path, token: str) -> bool:
    """Remove the token file `path` if it still holds `token` (not a newer system's)."""
    try:
        if path.read_text().strip() != token:
            return False
        path.unlink()
    except OSError:
        return False
    return True
