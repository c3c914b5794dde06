"""Death-spiral guardrails: memory limits, a GC-pressure breaker and predictive restart."""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from ._events import EventLog
from ._types import Clock

__all__ = ["GcPressureBreaker", "GuardrailLevel", "MemoryGuardrail", "PredictiveRestart"]


class GuardrailLevel(StrEnum):
    """What the memory guardrail lets through."""

    OK = "ok"  # all work
    SHED = "shed"  # critical work only
    REFUSE = "refuse"  # no new work


class MemoryGuardrail:
    """Shed non-critical work above ``shed_at`` of a memory limit, refuse all above ``refuse_at``.

    ``reader`` returns the bytes in use (e.g. the process RSS); the guardrail reads it
    at most every ``min_interval`` seconds. Levels drop back only ``hysteresis`` below
    their threshold, so the guardrail does not flap around it.
    """

    def __init__(
        self,
        limit_bytes: float,
        reader: Callable[[], float],
        *,
        shed_at: float = 0.8,
        refuse_at: float = 0.95,
        hysteresis: float = 0.05,
        min_interval: float = 0.1,
        name: str = "memory_guardrail",
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        if limit_bytes <= 0 or not 0 < shed_at < refuse_at <= 1:
            msg = f"need limit_bytes > 0 and 0 < shed_at < refuse_at <= 1, got {shed_at=}"
            raise ValueError(msg)
        self.name = name
        self.limit_bytes = limit_bytes
        self.shed_at = shed_at
        self.refuse_at = refuse_at
        self.hysteresis = hysteresis
        self.min_interval = min_interval
        self.enabled = enabled
        self._reader = reader
        self._clock = clock
        self._events = events
        # Guarded by the event loop (sync code only).
        self._level = GuardrailLevel.OK
        self._used = 0.0
        self._read_at = -float("inf")
        self.shed = 0
        self.refused = 0

    @property
    def usage(self) -> float:
        """Share of the limit in use at the last reading."""
        return self._used / self.limit_bytes

    def check(self) -> GuardrailLevel:
        """Read memory (rate-limited) and return the current level."""
        now = self._clock()
        if now - self._read_at < self.min_interval:
            return self._level
        self._read_at = now
        self._used = float(self._reader())
        usage = self._used / self.limit_bytes
        level = self._level
        if usage >= self.refuse_at:
            new = GuardrailLevel.REFUSE
        elif usage >= self.shed_at:
            refusing = level is GuardrailLevel.REFUSE and usage > self.refuse_at - self.hysteresis
            new = GuardrailLevel.REFUSE if refusing else GuardrailLevel.SHED
        elif level is not GuardrailLevel.OK and usage > self.shed_at - self.hysteresis:
            new = GuardrailLevel.SHED
        else:
            new = GuardrailLevel.OK
        if new is not level:
            self._level = new
            if self._events is not None:
                reason = f"memory at {usage:.0%} of limit"
                if level is GuardrailLevel.OK:
                    self._events.record(self.name, "activated", reason, level=new.value)
                elif new is GuardrailLevel.OK:
                    self._events.record(self.name, "deactivated", reason, level=new.value)
        return self._level

    def admit(self, critical: bool = False) -> bool:
        """Return whether to accept new work (critical work survives shedding)."""
        if not self.enabled:
            return True
        level = self.check()
        if level is GuardrailLevel.OK or (level is GuardrailLevel.SHED and critical):
            return True
        if level is GuardrailLevel.SHED:
            self.shed += 1
        else:
            self.refused += 1
        return False

    def reset(self) -> None:
        """Forget the last reading and go back to OK."""
        if self._level is not GuardrailLevel.OK and self._events is not None:
            self._events.record(self.name, "deactivated", "reset", level="ok")
        self._level = GuardrailLevel.OK
        self._read_at = -float("inf")
        self.shed = self.refused = 0

    def snapshot(self) -> dict[str, object]:
        """Return usage and level as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "level": self._level.value,
            "used_bytes": self._used,
            "limit_bytes": self.limit_bytes,
            "usage": self.usage,
            "shed": self.shed,
            "refused": self.refused,
        }


class GcPressureBreaker:
    """Refuse non-critical work while garbage collection eats too much wall time.

    Pauses are fed with ``record_pause(seconds)`` or measured from the interpreter with
    ``attach()`` (``gc.callbacks``). The breaker opens when the share of the last
    ``window_seconds`` spent in GC exceeds ``threshold`` and closes below half of it.
    """

    def __init__(
        self,
        threshold: float = 0.1,
        window_seconds: float = 10.0,
        *,
        name: str = "gc_breaker",
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        if not 0 < threshold < 1 or window_seconds <= 0:
            msg = f"need 0 < threshold < 1 and window_seconds > 0, got {threshold=}"
            raise ValueError(msg)
        self.name = name
        self.threshold = threshold
        self.window_seconds = window_seconds
        self.enabled = enabled
        self._clock = clock
        self._events = events
        # Guarded by the GIL: gc callbacks run on whichever thread triggered collection,
        # and deque appends/pops are atomic; readers copy before iterating.
        self._pauses: deque[tuple[float, float]] = deque()
        self._open = False
        self._gc_started: float | None = None
        self.rejected = 0

    def record_pause(self, seconds: float) -> None:
        """Count a GC pause of ``seconds`` that just ended."""
        self._pauses.append((self._clock(), seconds))

    def gc_share(self) -> float:
        """Return the share of the window spent in GC pauses."""
        now = self._clock()
        while self._pauses and now - self._pauses[0][0] > self.window_seconds:
            self._pauses.popleft()
        return min(1.0, sum(d for _, d in list(self._pauses)) / self.window_seconds)

    def allow(self, critical: bool = False) -> bool:
        """Return whether to accept new work now."""
        if not self.enabled:
            return True
        share = self.gc_share()
        if not self._open and share > self.threshold:
            self._open = True
            if self._events is not None:
                self._events.record(self.name, "activated", f"GC took {share:.0%} of wall time")
        elif self._open and share < self.threshold / 2:
            self._open = False
            if self._events is not None:
                self._events.record(self.name, "deactivated", f"GC down to {share:.0%}")
        if self._open and not critical:
            self.rejected += 1
            return False
        return True

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started is not None:
            self.record_pause(time.perf_counter() - self._gc_started)
            self._gc_started = None

    def attach(self) -> None:
        """Measure real interpreter GC pauses via ``gc.callbacks``."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def detach(self) -> None:
        """Stop measuring interpreter GC pauses."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    @property
    def is_open(self) -> bool:
        """Whether non-critical work is being refused."""
        return self._open

    def reset(self) -> None:
        """Forget pauses and close."""
        self._pauses.clear()
        self.rejected = 0
        if self._open:
            self._open = False
            if self._events is not None:
                self._events.record(self.name, "deactivated", "reset")

    def snapshot(self) -> dict[str, object]:
        """Return the GC share and breaker state as JSON-able data."""
        return {
            "name": self.name,
            "enabled": self.enabled,
            "open": self._open,
            "gc_share": self.gc_share(),
            "threshold": self.threshold,
            "rejected": self.rejected,
        }


class PredictiveRestart:
    """Ask for a graceful restart when memory's linear trend will cross the limit soon.

    Fits a least-squares line to the samples of the last ``window_seconds`` and
    requests a restart when the line reaches ``limit_bytes * target`` within
    ``horizon_seconds``. ``on_restart(reason)`` is called once per request; call
    ``acknowledge()`` after restarting.
    """

    def __init__(
        self,
        limit_bytes: float,
        *,
        horizon_seconds: float = 60.0,
        window_seconds: float = 120.0,
        min_samples: int = 10,
        target: float = 0.95,
        on_restart: Callable[[str], None] | None = None,
        name: str = "predictive_restart",
        clock: Clock = time.monotonic,
        events: EventLog | None = None,
        enabled: bool = True,
    ) -> None:
        if limit_bytes <= 0 or horizon_seconds <= 0 or min_samples < 2:
            msg = "need limit_bytes > 0, horizon_seconds > 0 and min_samples >= 2"
            raise ValueError(msg)
        self.name = name
        self.limit_bytes = limit_bytes
        self.horizon_seconds = horizon_seconds
        self.window_seconds = window_seconds
        self.min_samples = min_samples
        self.target = target
        self.enabled = enabled
        self._on_restart = on_restart
        self._clock = clock
        self._events = events
        # Guarded by the event loop (sync code only).
        self._samples: deque[tuple[float, float]] = deque()
        self._requested = False
        self.requests = 0

    def trend(self) -> tuple[float, float] | None:
        """Return (bytes per second, fitted bytes now), or None with too few samples."""
        if len(self._samples) < self.min_samples:
            return None
        n = len(self._samples)
        t0 = self._samples[-1][0]
        xs = [t - t0 for t, _ in self._samples]
        ys = [b for _, b in self._samples]
        mx, my = sum(xs) / n, sum(ys) / n
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx == 0:
            return None
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return slope, my - slope * mx  # intercept at x = 0, i.e. the latest sample's time

    def seconds_to_limit(self) -> float | None:
        """Return the predicted seconds until the target is crossed (None if not rising)."""
        fit = self.trend()
        if fit is None:
            return None
        slope, now_bytes = fit
        goal = self.limit_bytes * self.target
        if now_bytes >= goal:
            return 0.0
        if slope <= 0:
            return None
        return (goal - now_bytes) / slope

    def observe(self, used_bytes: float) -> bool:
        """Add a memory sample; return True when a restart is (or was) requested."""
        now = self._clock()
        self._samples.append((now, float(used_bytes)))
        while now - self._samples[0][0] > self.window_seconds:
            self._samples.popleft()
        if not self.enabled or self._requested:
            return self._requested
        eta = self.seconds_to_limit()
        if eta is not None and eta <= self.horizon_seconds:
            self._requested = True
            self.requests += 1
            reason = f"memory predicted to reach {self.target:.0%} of limit in {eta:.0f}s"
            if self._events is not None:
                self._events.record(self.name, "activated", reason, eta_seconds=eta)
            if self._on_restart is not None:
                self._on_restart(reason)
        return self._requested

    @property
    def requested(self) -> bool:
        """Whether a restart has been requested and not yet acknowledged."""
        return self._requested

    def acknowledge(self) -> None:
        """Record that the restart happened; forget old samples."""
        if self._requested and self._events is not None:
            self._events.record(self.name, "deactivated", "restart completed")
        self._requested = False
        self._samples.clear()

    def reset(self) -> None:
        """Forget samples and any pending request."""
        self.acknowledge()
        self.requests = 0

    def snapshot(self) -> dict[str, object]:
        """Return the trend and restart state as JSON-able data."""
        fit = self.trend()
        return {
            "name": self.name,
            "enabled": self.enabled,
            "samples": len(self._samples),
            "bytes_per_second": fit[0] if fit else None,
            "seconds_to_limit": self.seconds_to_limit(),
            "requested": self._requested,
            "requests": self.requests,
        }
