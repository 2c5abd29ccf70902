"""The chain layer (`chain_epoch`): each mask and rule of yuma.md section 1, and the subtensor Yuma 3 test targets."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rewards.consensus import (
    EpochState,
    YumaParams,
    chain_epoch,
    fixed_proportion_to_u16,
    params_from_doc,
    validator_permits,
    yuma_epoch,
)
from rewards.yuma_core import u16_weights

VECTORS = Path(__file__).resolve().parents[3] / "shared/reference/yuma-vectors"
U = 65535
FIELDS = ("consensus", "incentive", "dividends", "validator_trust", "bonds")
PARAMS = {
    "yuma2": YumaParams(yuma_version="yuma2"),
    "yuma3": YumaParams(),
    "yuma3_liquid": YumaParams(liquid_alpha_enabled=True),
}


def plain_state(seed: int, n_val: int = 6, n_min: int = 9, epoch: int = 10) -> EpochState:
    """Every validator active and permitted, miners registered long ago, random prior bonds in [0, 0.5]."""
    rng = np.random.default_rng(seed)
    return EpochState(
        weights=rng.random((n_val, n_min)) * (rng.random((n_val, n_min)) < 0.7),
        stake=rng.lognormal(size=n_val),
        last_update=np.full(n_val, epoch),
        registered_at=np.zeros(n_min),
        epoch=epoch,
        bonds=rng.random((n_val, n_min)) * 0.5,
    )


def assert_same(a, b, fields=FIELDS, atol: float = 1e-15) -> None:
    for field in fields:
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=0, atol=atol, err_msg=field)


# ------------------------------------------------------------------------------------------------ core agreement
@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
@pytest.mark.parametrize("seed", range(3))
def test_without_masks_chain_epoch_is_yuma_epoch(params: YumaParams, seed: int) -> None:
    state = plain_state(seed)
    assert_same(chain_epoch(state, params), yuma_epoch(state.weights, state.stake, state.bonds, params))


# Case 9 moves all of one validator's stake away; the vectors keep it permitted, the chain takes its permit.
CHAIN_VECTORS = sorted(p for p in VECTORS.glob("*.json") if not p.name.startswith("case09"))


@pytest.mark.parametrize("path", CHAIN_VECTORS, ids=lambda p: p.stem)
def test_golden_vectors_through_chain_epoch(path: Path) -> None:
    doc = json.loads(path.read_text())
    params = replace(params_from_doc(doc), max_allowed_validators=1024)
    bonds = None
    for n, epoch in enumerate(doc["epochs"]):
        w = np.asarray(epoch["W"], dtype=np.float64)
        if bonds is not None and epoch.get("reset_bond_columns"):
            bonds = bonds.copy()
            bonds[:, epoch["reset_bond_columns"]] = 0.0
        state = EpochState(weights=w, stake=epoch["S"], last_update=np.full(w.shape[0], n + 1),
                           registered_at=np.zeros(w.shape[1]), epoch=n + 1, bonds=bonds)
        r = chain_epoch(state, params)
        bonds = r.bonds
        for field in FIELDS:
            np.testing.assert_allclose(getattr(r, field), epoch["expected"][field], rtol=0, atol=1e-6,
                                       err_msg=f"epoch {n} {field}")


# ------------------------------------------------------------------------------------------------ permits
def test_permits_are_top_k_and_the_lower_uid_loses_a_tie() -> None:
    stake = np.array([3.0, 2.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(validator_permits(stake, 2), [True, False, True, False, False])
    # The tie is broken by uid, not by row: here the row holding 2.0 first has the higher uid and keeps its permit.
    np.testing.assert_array_equal(validator_permits(stake, 2, uids=[0, 7, 3, 1, 2]), [True, True, False, False, False])


def test_permits_skip_zero_stake_and_always_include_the_owner() -> None:
    np.testing.assert_array_equal(validator_permits([0.0, 1.0, 0.0], 5), [False, True, False])
    np.testing.assert_array_equal(validator_permits([0.0, 1.0, 2.0], 1, owner_row=0), [True, False, True])


def test_previous_permits_mask_this_epoch_and_new_ones_are_returned() -> None:
    state = plain_state(4, n_val=4)
    params = YumaParams(max_allowed_validators=3)
    stake = np.array([4.0, 3.0, 2.0, 1.0])
    state = replace(state, stake=stake, validator_permit=[True, False, True, True])
    r = chain_epoch(state, params)
    # Validator 1 had no permit: its row and stake are masked, as if it were absent.
    w = np.asarray(state.weights).copy()
    w[1] = 0.0
    base = yuma_epoch(w, stake * [1, 0, 1, 1], state.bonds, params)
    assert_same(r, base, ("consensus", "incentive", "validator_trust"))
    assert r.active_stake[1] == 0.0 and r.dividends[1] == 0.0
    # New permits go to the top 3 stakes; validator 3 loses its permit and its bond row is cleared.
    np.testing.assert_array_equal(r.validator_permit, [True, True, True, False])
    assert not r.bonds[3].any()
    np.testing.assert_array_equal(r.bonds[[0, 2]], base.bonds[[0, 2]])


def test_no_previous_permits_on_record_means_this_epochs_top_k() -> None:
    state = replace(plain_state(5), stake=[5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
    r = chain_epoch(state, YumaParams(max_allowed_validators=4))
    np.testing.assert_array_equal(r.validator_permit, [True] * 4 + [False] * 2)
    assert not r.active_stake[4:].any() and not r.bonds[4:].any()


# ------------------------------------------------------------------------------------------------ stake and activity
def test_activity_cutoff_in_epochs() -> None:
    state = replace(plain_state(6), epoch=30, last_update=[30, 17, 16, 30, 30, 30])
    r = chain_epoch(state, YumaParams())  # 13.889 epochs: updated at 17 is active at 30, at 16 is not
    np.testing.assert_array_equal(r.active, [True, True, False, True, True, True])
    assert r.active_stake[2] == 0.0 and r.active_stake[1] > 0.0
    assert r.dividends[2] == 0.0
    assert chain_epoch(state, YumaParams(activity_cutoff=14.0)).active.all()


def test_stake_below_the_threshold_counts_as_zero_except_the_owners() -> None:
    state = replace(plain_state(7, n_val=3), stake=[10.0, 0.5, 0.4], owner_uid=2)
    r = chain_epoch(state, YumaParams(stake_threshold=1.0))
    np.testing.assert_allclose(r.stake, [10 / 10.4, 0.0, 0.4 / 10.4])
    np.testing.assert_array_equal(r.validator_permit, [True, False, True])


@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
def test_scaling_stake_and_threshold_together_changes_nothing(params: YumaParams) -> None:
    state = replace(plain_state(8), stake=[10.0, 0.5, 3.0, 0.4, 2.0, 1.0])
    p = replace(params, stake_threshold=0.6)
    a = chain_epoch(state, p)
    b = chain_epoch(replace(state, stake=np.asarray(state.stake) * 1e3), replace(p, stake_threshold=600.0))
    assert_same(a, b, FIELDS + ("active_stake", "stake"), atol=1e-14)


# ------------------------------------------------------------------------------------------------ weight masks
def test_self_weights_are_dropped_except_the_owners() -> None:
    rng = np.random.default_rng(9)
    n = 6  # one uid space: every uid is both a row and a column, as on chain
    w = rng.random((n, n)) + 0.1
    stake = np.array([5.0, 4.0, 3.0, 0.0, 0.0, 0.0])
    state = EpochState(weights=w, stake=stake, last_update=np.full(n, 5), registered_at=np.zeros(n), epoch=5,
                       validator_uids=np.arange(n), miner_uids=np.arange(n), owner_uid=1)
    r = chain_epoch(state, YumaParams())
    expected = w.copy()
    np.fill_diagonal(expected, 0.0)
    expected[1, 1] = w[1, 1]
    expected[3:] = 0.0  # no stake, so no permit
    assert_same(r, yuma_epoch(expected, stake, None, YumaParams()), ("consensus", "incentive", "validator_trust"))
    assert r.clipped_weights[0, 0] == 0.0 and r.clipped_weights[1, 1] > 0.0


def test_weights_set_before_a_miners_registration_are_dropped() -> None:
    state = replace(plain_state(10), epoch=20, last_update=[20, 12, 20, 15, 20, 20],
                    registered_at=[0, 12, 0, 0, 14, 0, 0, 20, 0])
    r = chain_epoch(state, YumaParams(activity_cutoff=100.0))
    w = np.asarray(state.weights).copy()
    for i, updated in enumerate(state.last_update):
        for j, registered in enumerate(state.registered_at):
            if updated <= registered:
                w[i, j] = 0.0
    assert w[1, 1] == 0.0 and w[1, 4] == 0.0 and w[0, 7] == 0.0 and w[3, 1] != 0.0
    bonds = np.asarray(state.bonds).copy()
    bonds[:, [7]] = 0.0  # registered in this epoch, after the last one ran: its bond column restarts
    assert_same(r, yuma_epoch(w, state.stake, bonds, YumaParams()))


def test_commit_reveal_drops_weights_whose_commit_predates_the_registration() -> None:
    state = replace(plain_state(11), epoch=20, last_update=np.full(6, 20), registered_at=[0, 0, 0, 17, 0, 0, 0, 0, 0],
                    commit_epoch=[16, -1, 18, -1, 17, -1], last_epoch=19)
    r = chain_epoch(state, YumaParams())
    w = np.asarray(state.weights).copy()
    w[0, 3] = 0.0  # committed at 16 < 17; a commit at 17 or 18 is not older than the registration
    assert_same(r, yuma_epoch(w, state.stake, state.bonds, YumaParams()))


def test_bond_columns_of_miners_registered_since_the_last_epoch_are_reset() -> None:
    state = replace(plain_state(12), epoch=8, last_update=np.full(6, 12), registered_at=[0, 6, 7, 0, 0, 0, 0, 0, 0],
                    last_epoch=6)
    bonds = np.asarray(state.bonds).copy()
    bonds[:, 2] = 0.0  # registered at 7, after the epoch that ran at 6
    for params in PARAMS.values():
        assert_same(chain_epoch(state, params), yuma_epoch(state.weights, state.stake, bonds, params))


# ------------------------------------------------------------------------------------------------ emission
def test_emission_split_is_18_41_41_by_default_and_configurable() -> None:
    state = plain_state(13)
    e = chain_epoch(state, YumaParams()).emission
    assert e.owner == pytest.approx(0.18)
    assert e.miners.sum() == pytest.approx(0.41) and e.validators.sum() == pytest.approx(0.41)
    e = chain_epoch(state, YumaParams(owner_cut=0.1)).emission
    assert e.owner == pytest.approx(0.1) and e.miners.sum() == pytest.approx(0.45)


def test_no_surviving_weight_pays_validators_by_active_stake() -> None:
    state = replace(plain_state(14), weights=np.zeros((6, 9)))
    r = chain_epoch(state, YumaParams())
    assert not r.incentive.any() and not r.dividends.any() and not r.emission.miners.any()
    np.testing.assert_allclose(r.emission.validators, 0.82 * r.active_stake)


def test_no_active_stake_pays_validators_by_stake() -> None:
    state = replace(plain_state(15), epoch=100)  # every validator last updated at 10: all inactive
    r = chain_epoch(state, YumaParams())
    assert not r.active.any() and not r.active_stake.any()
    np.testing.assert_allclose(r.emission.validators, 0.82 * r.stake)


def test_only_self_weights_count_as_no_weights() -> None:
    n = 4
    state = EpochState(weights=np.eye(n), stake=np.ones(n), last_update=np.full(n, 3), registered_at=np.zeros(n),
                       epoch=3, validator_uids=np.arange(n), miner_uids=np.arange(n))
    r = chain_epoch(state, YumaParams())
    assert not r.incentive.any()
    np.testing.assert_allclose(r.emission.validators, np.full(n, 0.82 / n))


# ------------------------------------------------------------------------------------------------ u16 storage
@pytest.mark.parametrize("params", PARAMS.values(), ids=PARAMS.keys())
def test_u16_storage_quantizes_weights_and_floors_bonds(params: YumaParams) -> None:
    state = plain_state(16)
    p = replace(params, storage="u16")
    r = chain_epoch(state, p)
    q = u16_weights(np, np.asarray(state.weights))
    assert q.max() == U and np.array_equal(q, np.round(q))
    base = yuma_epoch(q, state.stake, state.bonds, params)
    assert_same(r, base, ("consensus", "incentive", "dividends", "validator_trust"), atol=1e-15)
    stored = r.stored()["Bonds"]
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(r.bonds * U, stored)
    if params.yuma_version == "yuma3":
        np.testing.assert_array_equal(stored, np.floor(base.bonds * U))
    else:  # columns max-upscaled to 65535 before the floor
        np.testing.assert_array_equal(stored, np.floor(base.bonds / base.bonds.max(axis=0) * U))
    np.testing.assert_array_equal(r.stored()["Incentive"], fixed_proportion_to_u16(r.incentive))
    # yuma_epoch honours the same option (its stake is normalized once, not twice: a floor may land one lower)
    np.testing.assert_allclose(yuma_epoch(state.weights, state.stake, state.bonds, p).bonds, r.bonds, rtol=0,
                               atol=1.000001 / U)


def test_u16_weights_round_half_up_after_max_upscaling() -> None:
    np.testing.assert_array_equal(u16_weights(np, np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])),
                                  [[U, 32768, 0], [0, 0, 0]])


def test_sparse_bonds_reset_pairs_with_no_weight_under_liquid_alpha() -> None:
    state = plain_state(17)
    dense = chain_epoch(state, YumaParams(liquid_alpha_enabled=True))
    sparse = chain_epoch(state, YumaParams(liquid_alpha_enabled=True, sparse_bonds=True))
    absent = dense.clipped_weights == 0
    assert absent.any() and (dense.bonds[absent] > 0).any()
    assert not sparse.bonds[absent].any()
    np.testing.assert_array_equal(sparse.bonds[~absent], dense.bonds[~absent])


# ------------------------------------------------------------------------------------------------ subtensor targets
# Targets of subtensor's own Yuma 3 tests (pallets/subtensor/src/tests/epoch.rs @14bc6f9, four decimals; the Rust
# tests accept 1e-3): 3 validators (uids 0-2) and 2-3 servers, bonds penalty 0, moving average 0.975, liquid alpha
# AlphaValues (6553, 19660), steepness 1000, kappa 32767, max 3 validators. Each scenario lists per epoch the u16
# weight rows set before it (None: unchanged), then the expected bonds and dividends.
A, B, H = [U, 0], [0, U], U // 2
SUBTENSOR_CASES = {
    "kappa_moves_first": ([8, 1, 1], [
        ([A, A, A], [[.1013, 0], [.1013, 0], [.1013, 0]], [.8, .1, .1]),
        ([B, A, A], [[.0908, .1013], [.3697, 0], [.3697, 0]], [1, 0, 0]),
        ([B, B, A], [[.0815, .1924], [.3170, .1013], [.5580, 0]], [.9382, .0618, 0]),
        ([B, B, B], [[.0731, .2742], [.2765, .1924], [.4306, .1013]], [.8819, .0773, .0407]),
        (None, [[.0656, .3478], [.2435, .2742], [.3589, .1924]], [.8564, .0844, .0592]),
        (None, [[.0588, .4139], [.2157, .3478], [.3089, .2742]], [.8418, .0884, .0697]),
    ]),
    "kappa_moves_second": ([8, 1, 1], [
        ([A, A, A], [[.1013, 0], [.1013, 0], [.1013, 0]], [.8, .1, .1]),
        ([A, B, A], [[.1924, 0], [.0908, .2987], [.1924, 0]], [.8446, .0498, .1056]),
        ([B, B, A], [[.1715, .1013], [.0815, .3697], [.4336, 0]], [.6868, .3132, 0]),
        ([B, B, B], [[.1531, .1924], [.0731, .4336], [.3608, .1013]], [.7421, .2090, .0489]),
        (None, [[.1369, .2742], [.0656, .4910], [.3103, .1924]], [.7625, .1706, .0669]),
        (None, [[.1225, .3478], [.0588, .5426], [.2712, .2742]], [.7730, .1508, .0762]),
    ]),
    "one_epoch_switch": ([33, 33, 34], [
        ([A, A, A], [[.1013, 0], [.1013, 0], [.1013, 0]], [.33, .33, .34]),
        ([A, A, A], [[.1924, 0], [.1924, 0], [.1924, 0]], [.33, .33, .34]),
        ([A, A, B], [[.2742, 0], [.2742, 0], [.1715, .2987]], [.3782, .3782, .2436]),
        ([A, A, A], [[.3478, 0], [.3478, 0], [.2554, .2618]], [.3628, .3628, .2745]),
        ([A, A, A], [[.4139, 0], [.4139, 0], [.3309, .2312]], [.3541, .3541, .2917]),
        ([A, A, A], [[.4733, 0], [.4733, 0], [.3987, .2051]], [.3487, .3487, .3026]),
    ]),
    "stable_miner": ([8, 1, 1], [
        ([[H, 0, H]] * 3, [[.0507, 0, .0507], [.0507, 0, .0507], [.0507, 0, .0507]], [.8, .1, .1]),
        ([[H, 0, H], [0, H, H], [H, 0, H]], [[.0962, 0, .0962], [.0455, .1, .0962], [.0962, 0, .0962]],
         [.8226, .0745, .1028]),
        ([[0, H, H], [0, H, H], [H, 0, H]], [[.0863, .0507, .1371], [.0408, .1405, .1371], [.1770, 0, .1371]],
         [.7750, .1685, .0565]),
        ([[0, H, H]] * 3, [[.0774, .0962, .1739], [.0367, .1770, .1739], [.1579, .0507, .1739]],
         [.7864, .1372, .0764]),
        (None, [[.0694, .1371, .2069], [.0329, .2097, .2069], [.1411, .0962, .2069]], [.7912, .1241, .0847]),
        (None, [[.0623, .1739, .2366], [.0296, .2391, .2366], [.1263, .1371, .2366]], [.7937, .1173, .0890]),
    ]),
}
SUBTENSOR_PARAMS = YumaParams(kappa=32767 / U, bonds_penalty=0.0, bonds_moving_average=0.975,
                              liquid_alpha_enabled=True, alpha_low=6553 / U, alpha_high=19660 / U,
                              alpha_sigmoid_steepness=10.0, max_allowed_validators=3)


@pytest.mark.parametrize("storage", ["u16", "float64"])
@pytest.mark.parametrize("case", SUBTENSOR_CASES, ids=SUBTENSOR_CASES.keys())
def test_subtensor_yuma3_targets(case: str, storage: str) -> None:
    stake, epochs = SUBTENSOR_CASES[case]
    params = replace(SUBTENSOR_PARAMS, storage=storage)
    n_min = len(epochs[0][1][0])
    # The setup epoch runs before any weights are set and with no permits on record; it hands out the permits.
    state = EpochState(weights=np.zeros((3, n_min)), stake=stake, last_update=[0, 0, 0],
                       registered_at=np.zeros(n_min), epoch=0, validator_permit=[False] * 3)
    r = chain_epoch(state, params)
    weights, updated = None, 0
    for n, (rows, want_bonds, want_dividends) in enumerate(epochs, start=1):
        if rows is not None:
            weights, updated = np.array(rows, dtype=np.float64), n
        state = replace(state, weights=weights, last_update=[updated] * 3, epoch=n, bonds=r.bonds,
                        validator_permit=r.validator_permit)
        r = chain_epoch(state, params)
        np.testing.assert_allclose(r.bonds, want_bonds, rtol=0, atol=1e-4, err_msg=f"epoch {n} bonds")
        np.testing.assert_allclose(r.stored()["Dividends"] / U, want_dividends, rtol=0, atol=1e-4,
                                   err_msg=f"epoch {n} dividends")


# ------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("change", [
    dict(stake=[1.0, 2.0]),
    dict(last_update=[0, 1]),
    dict(registered_at=[0]),
    dict(validator_uids=[0, 0, 1, 2, 3, 4]),
    dict(bonds=np.full((6, 9), 2.0)),
    dict(weights=-np.ones((6, 9))),
])
def test_bad_states_are_rejected(change: dict) -> None:
    with pytest.raises(ValueError):
        chain_epoch(replace(plain_state(18), **change), YumaParams())


def test_bad_new_params_are_rejected() -> None:
    for bad in (dict(storage="u8"), dict(max_allowed_validators=-1), dict(activity_cutoff=-1.0),
                dict(owner_cut=1.5), dict(stake_threshold=float("nan"))):
        with pytest.raises(ValueError):
            YumaParams(**bad)
