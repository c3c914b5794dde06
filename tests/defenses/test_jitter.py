"""Statistical tests of the jitter strategies, with a seeded random generator."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from chaosemergence.defenses import EventLog, Jitter
from chaosemergence.defenses.control import adaptive_factor

N = 20_000
KS_CRITICAL = 1.63 / math.sqrt(N)  # Kolmogorov-Smirnov at alpha = 0.01


def ks_statistic(samples: list[float], cdf: object) -> float:
    """Return the largest gap between the empirical and the theoretical CDF."""
    ordered = sorted(samples)
    n = len(ordered)
    gap = 0.0
    for i, x in enumerate(ordered):
        f = cdf(x)  # type: ignore[operator]
        gap = max(gap, abs(f - i / n), abs(f - (i + 1) / n))
    return gap


def draws(jitter: Jitter, interval: float = 10.0) -> list[float]:
    return [jitter.apply(interval) for _ in range(N)]


def test_uniform_is_uniform_around_the_interval() -> None:
    """Uniform jitter draws from U(x(1-f), x(1+f)) with mean x."""
    samples = draws(Jitter("uniform", 0.1, random.Random(1)))
    assert min(samples) >= 9.0 and max(samples) <= 11.0
    assert statistics.fmean(samples) == pytest.approx(10.0, abs=0.02)
    assert ks_statistic(samples, lambda x: (x - 9.0) / 2.0) < KS_CRITICAL


def test_exponential_adds_an_exponential_delay() -> None:
    """Exponential jitter adds Exp(mean f*x): never early, mean x(1+f)."""
    samples = draws(Jitter("exponential", 0.1, random.Random(2)))
    assert min(samples) >= 10.0
    assert statistics.fmean(samples) == pytest.approx(11.0, rel=0.02)
    assert ks_statistic(samples, lambda x: 1 - math.exp(-(x - 10.0))) < KS_CRITICAL


def test_gaussian_has_mean_x_and_std_fx() -> None:
    """Gaussian jitter is centred on x with standard deviation f*x."""
    samples = draws(Jitter("gaussian", 0.1, random.Random(3)))
    assert statistics.fmean(samples) == pytest.approx(10.0, abs=0.03)
    assert statistics.stdev(samples) == pytest.approx(1.0, rel=0.03)


def test_adaptive_factor_follows_the_seed_formula() -> None:
    """The adaptive factor is 0.1 * 2**(3c): 0.1 at c=0, 0.8 at c=1."""
    assert adaptive_factor(0.0) == pytest.approx(0.1)
    assert adaptive_factor(0.5) == pytest.approx(0.1 * 2**1.5)
    assert adaptive_factor(1.0) == pytest.approx(0.8)


def test_adaptive_spread_grows_with_correlation() -> None:
    """With uniform as its distribution, adaptive jitter's spread matches 0.1*2**(3c)."""
    for c in (0.0, 0.5, 0.9):
        j = Jitter("adaptive", rng=random.Random(4), correlation=c, adaptive_distribution="uniform")
        samples = draws(j)
        half_width = 10.0 * adaptive_factor(c)
        assert statistics.stdev(samples) == pytest.approx(half_width / math.sqrt(3), rel=0.03)


def test_adaptive_picks_a_distribution_per_instance() -> None:
    """Different seeded instances end up with different distributions, like different services."""
    chosen = {
        Jitter("adaptive", rng=random.Random(seed)).adaptive_distribution for seed in range(30)
    }
    assert chosen == {"uniform", "exponential", "gaussian"}


@pytest.mark.parametrize(
    ("c", "distribution", "factor"),
    [
        (0.1, "uniform", 0.05),
        (0.4, "uniform", 0.1),
        (0.6, "exponential", 0.2),
        (0.8, "gaussian", 0.1 * 2**2.4),
    ],
)
def test_correlated_follows_the_seed_ladder(c: float, distribution: str, factor: float) -> None:
    """The correlated strategy escalates at the seed's 0.3 / 0.5 / 0.7 correlation levels."""
    j = Jitter("correlated", rng=random.Random(5), correlation=c, adaptive_distribution="gaussian")
    got_distribution, got_factor = j.effective()
    assert got_distribution == distribution
    assert got_factor == pytest.approx(factor)


def test_maximum_mode_uses_the_largest_factor_and_records_events(events: EventLog) -> None:
    """Maximum jitter widens to factor 0.8 and is recorded as activated / deactivated."""
    j = Jitter("uniform", rng=random.Random(6), events=events, adaptive_distribution="uniform")
    j.set_maximum(True, "phase defense")
    assert j.effective() == ("uniform", pytest.approx(0.8))
    assert max(draws(j)) > 15.0
    j.set_maximum(True)
    j.reset()
    assert [e.kind for e in events.all()] == ["activated", "deactivated"]
    assert events.all()[0].defense == "jitter"


def test_disabled_jitter_returns_the_interval() -> None:
    """With enabled=False timers fire exactly on their interval (the synchronized control)."""
    j = Jitter("uniform", 0.5, random.Random(7), enabled=False)
    assert {j.apply(10.0) for _ in range(100)} == {10.0}
    assert j.phase(10.0) == 0.0


def test_phase_randomization_spreads_start_offsets() -> None:
    """phase() draws start offsets uniformly in [0, interval)."""
    j = Jitter(rng=random.Random(8))
    offsets = [j.phase(60.0) for _ in range(N)]
    assert ks_statistic(offsets, lambda x: x / 60.0) < KS_CRITICAL


def test_values_are_never_negative() -> None:
    """Even a huge gaussian factor never yields a negative delay."""
    j = Jitter("gaussian", 2.0, random.Random(9))
    assert min(draws(j)) >= 0.0


def test_unknown_strategy_is_rejected() -> None:
    """A misspelled strategy raises ValueError listing the valid ones."""
    with pytest.raises(ValueError, match="uniform"):
        Jitter("random")  # type: ignore[arg-type]
