"""Invariants of the chain epoch on random states: distributions, stakeless validators, permutations, stake scale."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rewards.consensus import EpochState, YumaParams, chain_epoch, yuma_epoch

PARAMS = {
    "yuma2": YumaParams(yuma_version="yuma2"),
    "yuma3": YumaParams(),
    "yuma3_liquid": YumaParams(liquid_alpha_enabled=True),
    "yuma3_liquid_beta0": YumaParams(liquid_alpha_enabled=True, bonds_penalty=0.0, bonds_moving_average=0.975,
                                     alpha_low=0.1, alpha_high=0.3),
    "yuma3_liquid_beta_half_u16": YumaParams(liquid_alpha_enabled=True, bonds_penalty=0.5, storage="u16"),
    "yuma3_liquid_sparse_steep": YumaParams(liquid_alpha_enabled=True, sparse_bonds=True,
                                            alpha_sigmoid_steepness=100.0),
}
SEEDS = range(6)
OUTPUTS = ("consensus", "incentive", "dividends", "validator_trust", "bonds", "active_stake", "validator_permit")


def random_state(seed: int) -> EpochState:
    """A messy subnet: sparse weights with ties, some inactive or unpermitted validators, recent registrations,
    one shared uid space slice (self-weights), an owner, prior bonds and a tight validator cap."""
    rng = np.random.default_rng(seed)
    n_val, n_min, epoch = int(rng.integers(3, 12)), int(rng.integers(2, 20)), 40
    w = rng.random((n_val, n_min)) * (rng.random((n_val, n_min)) < 0.6)
    w[rng.random((n_val, n_min)) < 0.1] = 0.25  # exact ties
    stake = rng.lognormal(size=n_val) * (rng.random(n_val) < 0.85)
    stake[0] = max(stake[0], 1.0)
    v_uids = rng.permutation(n_val + n_min)[:n_val]
    m_uids = np.concatenate([v_uids[:2], rng.permutation(np.arange(n_val + n_min, n_val + 2 * n_min))[:n_min - 2]])
    return EpochState(
        weights=w,
        stake=stake,
        last_update=rng.choice([epoch, epoch - 3, epoch - 20], size=n_val, p=[0.7, 0.2, 0.1]),
        registered_at=rng.choice([0, 30, epoch - 1, epoch], size=n_min, p=[0.7, 0.1, 0.1, 0.1]),
        epoch=epoch,
        bonds=rng.random((n_val, n_min)) * 0.6,
        validator_permit=rng.random(n_val) < 0.9,
        validator_uids=v_uids,
        miner_uids=m_uids,
        owner_uid=int(v_uids[1]),
    )


def params_for(params: YumaParams, state: EpochState) -> YumaParams:
    """The given params with a validator cap that binds (about three quarters of the rows)."""
    return replace(params, max_allowed_validators=max(1, 3 * len(state.stake) // 4))


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_incentive_and_dividends_are_distributions(params: YumaParams, seed: int) -> None:
    state = random_state(seed)
    p = params_for(params, state)
    r = chain_epoch(state, p)
    for field in ("consensus", "incentive", "dividends", "validator_trust", "bonds", "active_stake"):
        assert np.all(getattr(r, field) >= 0), field
    assert np.all(r.bonds <= 1.0)
    assert r.incentive.sum() > 0, "the random state should keep some weight"
    assert r.incentive.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.dividends.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.emission.owner + r.emission.miners.sum() + r.emission.validators.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(r.validator_trust <= 1.0 + 1e-12)
    assert np.all(r.clipped_weights <= r.consensus[None, :])
    assert not r.bonds[~r.validator_permit].any()


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_a_validator_with_zero_stake_changes_nothing(params: YumaParams, seed: int) -> None:
    state = random_state(seed)
    p = params_for(params, state)
    rng = np.random.default_rng(1000 + seed)
    n_min = len(state.registered_at)
    extra = replace(
        state,
        weights=np.vstack([state.weights, rng.random(n_min)]),
        stake=np.append(state.stake, 0.0),
        last_update=np.append(state.last_update, state.epoch),
        # Without stake it held no permit last epoch either, and the chain cleared its bonds then.
        bonds=np.vstack([state.bonds, np.zeros(n_min)]),
        validator_permit=np.append(state.validator_permit, False),
        validator_uids=np.append(state.validator_uids, 10_000),
    )
    base, more = chain_epoch(state, p), chain_epoch(extra, p)
    for field in ("consensus", "incentive"):
        np.testing.assert_allclose(getattr(more, field), getattr(base, field), rtol=0, atol=1e-15, err_msg=field)
    for field in ("dividends", "validator_trust", "bonds", "active_stake", "validator_permit"):
        np.testing.assert_allclose(getattr(more, field)[:-1], getattr(base, field), rtol=0, atol=1e-15, err_msg=field)
    # Nor does it get a new permit, so it earns nothing and keeps no bonds.
    assert not more.validator_permit[-1] and more.dividends[-1] == 0.0 and not more.bonds[-1].any()
    np.testing.assert_allclose(more.emission.validators[:-1], base.emission.validators, rtol=0, atol=1e-15)


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_permuting_miners_permutes_outputs(params: YumaParams, seed: int) -> None:
    state = random_state(seed)
    p = params_for(params, state)
    perm = np.random.default_rng(2000 + seed).permutation(len(state.registered_at))
    moved = replace(state, weights=state.weights[:, perm], bonds=state.bonds[:, perm],
                    registered_at=state.registered_at[perm], miner_uids=state.miner_uids[perm])
    base, r = chain_epoch(state, p), chain_epoch(moved, p)
    for field in ("consensus", "incentive"):
        np.testing.assert_allclose(getattr(r, field), getattr(base, field)[perm], rtol=0, atol=1e-15)
    np.testing.assert_allclose(r.bonds, base.bonds[:, perm], rtol=0, atol=1e-15)
    for field in ("dividends", "validator_trust"):
        np.testing.assert_allclose(getattr(r, field), getattr(base, field), rtol=0, atol=1e-15)


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_permuting_validators_permutes_outputs(params: YumaParams, seed: int) -> None:
    state = random_state(seed)
    p = params_for(params, state)
    perm = np.random.default_rng(3000 + seed).permutation(len(state.stake))
    moved = replace(state, weights=state.weights[perm], bonds=state.bonds[perm], stake=state.stake[perm],
                    last_update=state.last_update[perm], validator_permit=state.validator_permit[perm],
                    validator_uids=state.validator_uids[perm])
    base, r = chain_epoch(state, p), chain_epoch(moved, p)
    for field in ("consensus", "incentive"):
        np.testing.assert_allclose(getattr(r, field), getattr(base, field), rtol=0, atol=1e-14)
    for field in ("dividends", "validator_trust", "active_stake", "validator_permit"):
        np.testing.assert_allclose(getattr(r, field), getattr(base, field)[perm], rtol=0, atol=1e-14)
    np.testing.assert_allclose(r.bonds, base.bonds[perm], rtol=0, atol=1e-14)


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_scaling_all_stakes_changes_nothing(params: YumaParams, seed: int) -> None:
    state = random_state(seed)
    p = params_for(params, state)
    base = chain_epoch(state, p)
    for scale in (1e-6, 3.0, 1e9):
        r = chain_epoch(replace(state, stake=state.stake * scale), p)
        for field in OUTPUTS:
            np.testing.assert_allclose(getattr(r, field), getattr(base, field), rtol=0, atol=1e-12, err_msg=field)


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", SEEDS)
def test_yuma_epoch_invariants(params: YumaParams, seed: int) -> None:
    """The core alone: distributions, miner permutation and stake scale (every validator permitted)."""
    rng = np.random.default_rng(4000 + seed)
    w = rng.random((7, 11)) * (rng.random((7, 11)) < 0.6)
    s, b = rng.lognormal(size=7), rng.random((7, 11)) * 0.5
    r = yuma_epoch(w, s, b, params)
    assert r.incentive.sum() == pytest.approx(1.0, abs=1e-12) and r.dividends.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(r.incentive >= 0) and np.all(r.dividends >= 0)
    perm = rng.permutation(11)
    moved = yuma_epoch(w[:, perm], s, b[:, perm], params)
    np.testing.assert_allclose(moved.incentive, r.incentive[perm], rtol=0, atol=1e-15)
    np.testing.assert_allclose(moved.dividends, r.dividends, rtol=0, atol=1e-15)
    scaled = yuma_epoch(w, s * 1e7, b, params)
    np.testing.assert_allclose(scaled.bonds, r.bonds, rtol=0, atol=1e-12)
    np.testing.assert_allclose(scaled.dividends, r.dividends, rtol=0, atol=1e-12)
