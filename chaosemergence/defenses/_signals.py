"""Judge the seed's emergence signals: which have fired and how close the system is."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["EmergenceSignals", "EmergenceThresholds"]


@dataclass(frozen=True, slots=True)
class EmergenceSignals:
    """A measurement of the signals that precede emergent failure.

    ``retry_rate`` is the share of dependency calls that are retries, ``retry_growth``
    the ratio of this window's retry rate to the previous one, ``load`` utilisation in
    [0, 1], ``latency_ratio`` p99 / p50, ``correlation`` the largest pairwise correlation
    of the cells' self-generated load.
    """

    retry_rate: float = 0.0
    retry_growth: float = 1.0
    load: float = 0.0
    latency_ratio: float = 1.0
    correlation: float = 0.0

    @classmethod
    def from_latencies(
        cls,
        *,
        p50: float,
        p99: float,
        retry_rate: float = 0.0,
        retry_growth: float = 1.0,
        load: float = 0.0,
        correlation: float = 0.0,
    ) -> EmergenceSignals:
        """Build signals from p50 and p99 instead of their ratio."""
        ratio = p99 / p50 if p50 > 0 else (1.0 if p99 <= 0 else float("inf"))
        return cls(retry_rate, retry_growth, load, ratio, correlation)

    def as_dict(self) -> dict[str, float]:
        """Return the signals as a JSON-able dict."""
        return asdict(self)


def _clamp(x: float) -> float:
    return 0.0 if x != x or x < 0.0 else min(x, 1.0)  # x != x catches NaN


@dataclass(frozen=True, slots=True)
class EmergenceThresholds:
    """The seed's trigger levels; a signal fires when strictly above its level.

    - retry storm: retry rate > 5% and growing > 1.5x,
    - phase transition: load > 0.65 and p99/p50 > 10,
    - synchronization: correlation > 0.7.
    """

    retry_rate: float = 0.05
    retry_growth: float = 1.5
    load: float = 0.65
    latency_ratio: float = 10.0
    correlation: float = 0.7

    def triggered(self, s: EmergenceSignals) -> tuple[str, ...]:
        """Return the names of the patterns whose signals have fired."""
        fired: list[str] = []
        if s.retry_rate > self.retry_rate and s.retry_growth > self.retry_growth:
            fired.append("retry_storm")
        if s.load > self.load and s.latency_ratio > self.latency_ratio:
            fired.append("phase_transition")
        if s.correlation > self.correlation:
            fired.append("synchronization")
        return tuple(fired)

    def risk(self, s: EmergenceSignals) -> float:
        """Return emergence risk in [0, 1]; exactly 0.8 when a signal sits on its threshold.

        Each pattern scores 0.8 x (value / threshold) for its weakest required signal,
        so a fired pattern scores above 0.8 (the seed's "high risk", 60 s open time).
        """
        retry = min(s.retry_rate / self.retry_rate, s.retry_growth / self.retry_growth)
        phase = min(s.load / self.load, s.latency_ratio / self.latency_ratio)
        sync = abs(s.correlation) / self.correlation
        return _clamp(0.8 * max(retry, phase, sync))
