"""Unit tests of the pure load-profile math the locustfile uses (no locust imported)."""

from __future__ import annotations

import random
import sys

import pytest

from chaosemergence.traffic import profiles
from chaosemergence.traffic.profiles import (
    LoadConfig,
    hot_key_ids,
    pick_user_id,
    spike_user_count,
    sync_delay,
)


def test_importing_the_traffic_package_never_imports_locust() -> None:
    """Neither the runner nor the profiles pull locust (or gevent's patches) into the caller."""
    import chaosemergence.traffic  # noqa: F401

    assert "locust" not in sys.modules


@pytest.mark.parametrize(
    ("now", "period", "expected"),
    [(100.25, 1.0, 0.75), (100.0, 1.0, 1.0), (7.5, 2.0, 0.5), (99.9999999, 1.0, 1.0000001)],
)
def test_sync_delay_wakes_at_the_next_multiple_of_the_period(
    now: float, period: float, expected: float
) -> None:
    """Sleeping sync_delay(now) lands on the next wall-clock multiple of the period."""
    assert sync_delay(now, period) == pytest.approx(expected, abs=1e-6)


def test_spike_runs_baseline_then_peak_in_the_middle_then_baseline() -> None:
    """The spike shape holds ceil(peak/multiplier) users outside its middle window and ends."""
    counts = [spike_user_count(t, 9.0, 8, 4.0, 1 / 3) for t in (0, 2.9, 3.1, 5.9, 6.1, 8.9)]
    assert counts == [2, 2, 8, 8, 2, 2]
    assert spike_user_count(9.0, 9.0, 8, 4.0, 1 / 3) is None


def test_hot_keys_are_the_same_for_one_seed_and_differ_across_seeds() -> None:
    """Every worker derives the same hot ids from the seed; another seed gives others."""
    assert hot_key_ids(7, 10_000, 20) == hot_key_ids(7, 10_000, 20)
    assert hot_key_ids(7, 10_000, 20) != hot_key_ids(8, 10_000, 20)
    assert len(set(hot_key_ids(7, 10_000, 20))) == 20
    assert hot_key_ids(7, 5, 20) == [1, 2, 3, 4, 5]


def test_hot_share_of_ids_go_to_hot_keys() -> None:
    """About hot_share of the picks land on the hot ids (plus their uniform share)."""
    rng = random.Random(1)
    hot = hot_key_ids(1, 10_000, 20)
    picks = [pick_user_id(rng, 10_000, hot, 0.5) for _ in range(20_000)]
    share = sum(pick in hot for pick in picks) / len(picks)
    assert 0.47 < share < 0.53
    assert all(1 <= pick <= 10_000 for pick in picks)


def test_load_config_reads_the_environment_and_rejects_garbage() -> None:
    """LoadConfig.from_env parses every variable, defaults the unset ones, names bad ones."""
    config = LoadConfig.from_env(
        {profiles.ENV_SHAPE: "synchronized", profiles.ENV_SEED: "9", profiles.ENV_HOT_SHARE: "0.8"}
    )
    assert (config.shape, config.seed, config.hot_share) == ("synchronized", 9, 0.8)
    assert config.population == 10_000
    with pytest.raises(ValueError, match=profiles.ENV_SHAPE):
        LoadConfig.from_env({profiles.ENV_SHAPE: "sawtooth"})
    with pytest.raises(ValueError, match=profiles.ENV_SEED):
        LoadConfig.from_env({profiles.ENV_SEED: "1.5"})


def test_configuration_reads_are_off_unless_asked_for() -> None:
    """Only an experiment that asks for users' configuration reads sends any."""
    assert LoadConfig.from_env({}).config_reads == 0
    assert LoadConfig.from_env({profiles.ENV_CONFIG_READS: "8"}).config_reads == 8
    with pytest.raises(ValueError, match=profiles.ENV_CONFIG_READS):
        LoadConfig.from_env({profiles.ENV_CONFIG_READS: "two"})
