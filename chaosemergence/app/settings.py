"""Settings of the reference system: the one place that reads its configuration.

Capacities and service times are configuration, not CPU speed, so that the feedback
loops (retries on a saturated dependency, work for callers who gave up) emerge at
modest request rates on any machine.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DependencySettings", "SystemSettings", "default_state_dir", "token_file_for_port"]


@dataclass(frozen=True)
class DependencySettings:
    """How one simulated downstream server behaves: finite workers, a queue, a service time."""

    concurrency: int = 8
    queue_limit: int = 64
    service_time_ms: float = 20.0
    # Timeout a caller (the cell) gives each attempt.
    call_timeout_ms: float = 250.0
    # A request hit by a timeout fault hangs a worker this long (until the server gives up)
    # and its answer is lost: the caller only sees its own deadline pass.
    hang_ms: float = 1000.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {self.queue_limit}")
        if self.service_time_ms <= 0:
            raise ValueError(f"service_time_ms must be > 0, got {self.service_time_ms}")
        if self.call_timeout_ms <= 0:
            raise ValueError(f"call_timeout_ms must be > 0, got {self.call_timeout_ms}")
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

    def __post_init__(self) -> None:
        if not 1 <= self.cells <= 64:
            raise ValueError(f"cells must be between 1 and 64, got {self.cells}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"host must be a loopback address, got {self.host!r}")

    def with_overrides(self, **changes: Any) -> SystemSettings:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SystemSettings:
        deps = {k: DependencySettings(**v) for k, v in data.get("dependencies", {}).items()}
        rest = {k: v for k, v in data.items() if k != "dependencies"}
        rest["state_dir"] = Path(rest["state_dir"])
        return cls(dependencies=deps or _default_dependencies(), **rest)


def default_state_dir() -> Path:
    """Where tokens, databases and logs live: $CHAOSEMERGENCE_HOME or ~/.chaosemergence."""
    return Path(os.environ.get("CHAOSEMERGENCE_HOME", Path.home() / ".chaosemergence"))


def token_file_for_port(port: int, state_dir: Path | None = None) -> Path:
    """The 0600 file holding the admin token of the gateway listening on `port`."""
    return (state_dir or default_state_dir()) / f"admin-token-{port}"
