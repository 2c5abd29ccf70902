"""Emission split of step 12: owner cut, miners by incentive, validators by dividends, stake fallback."""

from __future__ import annotations

import numpy as np
import pytest

from rewards.consensus import YumaParams, yuma_epoch
from rewards.emission import emission_shares


def total(shares) -> float:
    return shares.owner + float(shares.miners.sum()) + float(shares.validators.sum())


def test_normal_epoch_splits_18_41_41() -> None:
    r = yuma_epoch([[1.0, 0.0], [0.7, 0.3], [0.2, 0.8]], [5.0, 3.0, 2.0], None, YumaParams())
    shares = emission_shares(r.incentive, r.dividends, r.active_stake)
    assert total(shares) == pytest.approx(1.0, abs=1e-12)
    assert shares.owner == 0.18
    assert shares.miners.sum() == pytest.approx(0.41, abs=1e-12)
    assert shares.validators.sum() == pytest.approx(0.41, abs=1e-12)
    np.testing.assert_allclose(shares.miners, 0.41 * r.incentive, rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_shares_sum_to_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shares = emission_shares(rng.random(7), rng.random(4), rng.random(4), owner_cut=rng.random())
    assert total(shares) == pytest.approx(1.0, abs=1e-12)
    assert np.all(shares.miners >= 0) and np.all(shares.validators >= 0)


def test_no_surviving_weight_pays_validators_by_stake() -> None:
    r = yuma_epoch(np.zeros((2, 3)), [3.0, 1.0], None, YumaParams())
    shares = emission_shares(r.incentive, r.dividends, r.active_stake)
    np.testing.assert_array_equal(shares.miners, np.zeros(3))
    np.testing.assert_allclose(shares.validators, [0.82 * 0.75, 0.82 * 0.25], rtol=0, atol=1e-15)
    assert shares.owner == 0.18
    assert total(shares) == pytest.approx(1.0, abs=1e-12)


def test_nothing_at_all_goes_to_the_owner() -> None:
    shares = emission_shares(np.zeros(2), np.zeros(3), np.zeros(3))
    assert shares.owner == 1.0
    assert not shares.miners.any() and not shares.validators.any()


@pytest.mark.parametrize("kwargs", [
    dict(incentive=[-0.1, 1.1], dividends=[1.0], active_stake=[1.0]),
    dict(incentive=[1.0], dividends=[1.0, 0.0], active_stake=[1.0]),
    dict(incentive=[1.0], dividends=[1.0], active_stake=[1.0], owner_cut=1.5),
])
def test_bad_inputs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        emission_shares(**kwargs)
