"""Yuma Consensus: golden-vector replays plus invariants of a single epoch."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from rewards.backend import get_xp, gpu_available
from rewards.consensus import EpochState, YumaParams, YumaResult, chain_epoch, replay, yuma_epoch
from rewards.yuma_core import _weighted_median

VECTORS = Path(__file__).resolve().parents[3] / "shared/reference/yuma-vectors"
VECTOR_FILES = sorted(VECTORS.glob("*.json"))
TOLERANCE = 1e-6  # absolute, as the vectors' README requires
FIELDS = ("consensus", "incentive", "dividends", "validator_trust", "bonds")

PARAM_SETS = {
    "yuma2": YumaParams(yuma_version="yuma2"),
    "yuma3": YumaParams(yuma_version="yuma3"),
    "yuma3_liquid": YumaParams(yuma_version="yuma3", liquid_alpha_enabled=True),
    "yuma3_liquid_beta0": YumaParams(yuma_version="yuma3", liquid_alpha_enabled=True, bonds_penalty=0.0,
                                     bonds_moving_average=0.975, alpha_low=0.1, alpha_high=0.3),
}


def random_inputs(seed: int, n_val: int = 6, n_min: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse random weights, lognormal stakes and random prior bonds in [0, 1]."""
    rng = np.random.default_rng(seed)
    w = rng.random((n_val, n_min)) * (rng.random((n_val, n_min)) < 0.6)
    s = rng.lognormal(size=n_val)
    b = rng.random((n_val, n_min)) * 0.5
    return w, s, b


def test_vectors_present() -> None:
    assert VECTOR_FILES, f"no golden vectors found in {VECTORS}"
    versions = {json.loads(f.read_text())["version"] for f in VECTOR_FILES}
    assert versions == {"yuma2", "yuma3", "yuma3_liquid"}


@pytest.mark.parametrize("path", VECTOR_FILES, ids=[f.stem for f in VECTOR_FILES])
def test_replay_matches_golden_vectors(path: Path) -> None:
    doc = json.loads(path.read_text())
    original = copy.deepcopy(doc)
    out = replay(doc)
    assert doc == original, "replay must not modify its input"
    assert len(out["epochs"]) == len(doc["epochs"])
    for n, (epoch, got) in enumerate(zip(doc["epochs"], out["epochs"])):
        assert "expected" not in got
        for field in FIELDS:
            want = np.asarray(epoch["expected"][field], dtype=np.float64)
            have = np.asarray(got["outputs"][field], dtype=np.float64)
            assert have.shape == want.shape, f"epoch {n} {field}"
            np.testing.assert_allclose(have, want, rtol=0, atol=TOLERANCE, err_msg=f"epoch {n} {field}")


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
@pytest.mark.parametrize("seed", range(5))
def test_incentive_and_dividends_are_distributions(params: YumaParams, seed: int) -> None:
    w, s, b = random_inputs(seed)
    r = yuma_epoch(w, s, b, params)
    for v in (r.incentive, r.dividends, r.consensus, r.validator_trust, r.bonds):
        assert np.all(v >= 0)
    assert r.incentive.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.dividends.sum() == pytest.approx(1.0, abs=1e-12)
    assert r.active_stake.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(r.validator_trust <= 1.0 + 1e-12)
    assert np.all(r.clipped_weights <= r.consensus[None, :])


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_zero_stake_validator_changes_nothing(params: YumaParams) -> None:
    w, s, b = random_inputs(1)
    rng = np.random.default_rng(99)
    base = yuma_epoch(w, s, b, params)
    extra = yuma_epoch(np.vstack([w, rng.random(w.shape[1])]), np.append(s, 0.0),
                       np.vstack([b, np.zeros(w.shape[1])]), params)
    np.testing.assert_allclose(extra.consensus, base.consensus, rtol=0, atol=1e-15)
    np.testing.assert_allclose(extra.incentive, base.incentive, rtol=0, atol=1e-15)
    np.testing.assert_allclose(extra.validator_trust[:-1], base.validator_trust, rtol=0, atol=1e-15)
    np.testing.assert_allclose(extra.bonds[:-1], base.bonds, rtol=0, atol=1e-15)
    assert extra.dividends[-1] == 0.0
    if params.yuma_version == "yuma2":
        # Yuma 2 bonds grow by stake, so a stakeless validator with no bonds holds none.
        assert not extra.bonds[-1].any()
        np.testing.assert_allclose(extra.dividends[:-1], base.dividends, rtol=0, atol=1e-15)
    # Yuma 3 bonds grow by weight alone: the stakeless (but permitted) validator buys bonds, which dilutes the
    # column-normalized bonds of the others (the vectors' case 9 keeps such a validator's bonds and trust).


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_zero_stake_validator_without_weights_changes_nothing(params: YumaParams) -> None:
    w, s, b = random_inputs(5)
    base = yuma_epoch(w, s, b, params)
    extra = yuma_epoch(np.vstack([w, np.zeros(w.shape[1])]), np.append(s, 0.0),
                       np.vstack([b, np.zeros(w.shape[1])]), params)
    for field in ("consensus", "incentive"):
        np.testing.assert_allclose(getattr(extra, field), getattr(base, field), rtol=0, atol=1e-15)
    for field in ("dividends", "validator_trust", "bonds"):
        np.testing.assert_allclose(getattr(extra, field)[:-1], getattr(base, field), rtol=0, atol=1e-15)
        assert not getattr(extra, field)[-1].any()


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_permuting_miners_permutes_outputs(params: YumaParams) -> None:
    w, s, b = random_inputs(2)
    perm = np.random.default_rng(7).permutation(w.shape[1])
    base = yuma_epoch(w, s, b, params)
    moved = yuma_epoch(w[:, perm], s, b[:, perm], params)
    np.testing.assert_allclose(moved.consensus, base.consensus[perm], rtol=0, atol=1e-15)
    np.testing.assert_allclose(moved.incentive, base.incentive[perm], rtol=0, atol=1e-15)
    np.testing.assert_allclose(moved.bonds, base.bonds[:, perm], rtol=0, atol=1e-15)
    np.testing.assert_allclose(moved.dividends, base.dividends, rtol=0, atol=1e-15)
    np.testing.assert_allclose(moved.validator_trust, base.validator_trust, rtol=0, atol=1e-15)


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_scaling_stakes_changes_nothing(params: YumaParams) -> None:
    w, s, b = random_inputs(3)
    base = yuma_epoch(w, s, b, params)
    scaled = yuma_epoch(w, s * 1e6, b, params)
    for field in ("consensus", "incentive", "dividends", "validator_trust", "bonds", "active_stake"):
        np.testing.assert_allclose(getattr(scaled, field), getattr(base, field), rtol=0, atol=1e-12)


def test_median_takes_the_higher_value_at_a_stake_tie() -> None:
    # Two equal stakes: stake(W >= 0.6) = 0.5 >= kappa (0.49999...), so the median is 0.6, as on chain.
    r = yuma_epoch([[0.2, 0.8], [0.6, 0.4]], [1.0, 1.0], None, YumaParams())
    np.testing.assert_allclose(r.consensus, [0.6, 0.8])
    np.testing.assert_allclose(r.clipped_weights, [[0.2, 0.8], [0.6, 0.4]])


def median_by_definition(w: np.ndarray, s: np.ndarray, kappa: float) -> np.ndarray:
    """Per column, the largest value v with stake(W >= v) >= kappa over the positive-stake rows (else the min)."""
    w, s = w[s > 0], s[s > 0]
    out = []
    for col in w.T:
        ok = [v for v in np.unique(col) if s[col >= v].sum() >= kappa]
        out.append(max(ok) if ok else col.min())
    return np.array(out)


@pytest.mark.parametrize("seed", range(60))
def test_weighted_median_matches_its_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_val = int(rng.choice([1, 2, 3, 17, 255, 256, 257, 1024, 1025, 1300]))  # float32 keys up to 1024 rows
    n_min = int(rng.integers(1, 25))
    kind = seed % 5
    w = rng.random((n_val, n_min))
    if kind == 1:
        w = np.round(w * 3) / 3  # exact ties
    elif kind == 2:
        w = 0.5 + rng.integers(0, 3, (n_val, n_min)) * 1e-12  # distinct values that share their key bits
    elif kind == 3:
        w = w * (rng.random((n_val, n_min)) < 0.3)  # mostly zeros
    elif kind == 4:
        w = np.where(rng.random((n_val, n_min)) < 0.5, 5e-324 * rng.integers(0, 300, (n_val, n_min)), w * 1e-300)
    s = rng.lognormal(size=n_val) * (rng.random(n_val) < 0.85)
    s[0] = max(s[0], 0.1)
    s /= s.sum()
    kappa = float(rng.choice([32767 / 65535, 0.3, 0.9, 0.0]))
    np.testing.assert_array_equal(_weighted_median(np, w, s, kappa), median_by_definition(w, s, kappa))


def test_full_bonds_penalty_buys_bonds_with_the_clipped_weight_exactly() -> None:
    w, s, b = random_inputs(6)
    r = yuma_epoch(w, s, b, YumaParams())
    alpha = 1.0 - 0.9
    np.testing.assert_array_equal(r.bonds, np.minimum(1.0, r.clipped_weights * alpha + (1.0 - alpha) * b))


def test_yuma3_bonds_above_one_are_rejected() -> None:
    w, s, _ = random_inputs(7)
    with pytest.raises(ValueError, match="bonds_prev"):
        yuma_epoch(w, s, np.full(w.shape, 1.5), YumaParams())
    yuma_epoch(w, s, np.full(w.shape, 1.5), YumaParams(yuma_version="yuma2"))  # column-normalized on read


def test_majority_validator_sets_consensus() -> None:
    r = yuma_epoch([[1.0, 0.0], [0.0, 1.0]], [0.8, 0.2], None, YumaParams())
    np.testing.assert_array_equal(r.consensus, [1.0, 0.0])
    np.testing.assert_array_equal(r.incentive, [1.0, 0.0])
    np.testing.assert_array_equal(r.validator_trust, [1.0, 0.0])
    np.testing.assert_allclose(r.dividends, [1.0, 0.0])


def test_rows_are_normalized_and_zero_rows_stay_zero() -> None:
    r = yuma_epoch([[2.0, 2.0], [0.0, 0.0]], [1.0, 1.0], None, YumaParams())
    np.testing.assert_array_equal(r.clipped_weights[1], [0.0, 0.0])
    assert r.validator_trust[1] == 0.0
    assert r.dividends[1] == 0.0


@pytest.mark.parametrize("params", PARAM_SETS.values(), ids=PARAM_SETS.keys())
def test_no_weights_gives_zero_incentive_and_dividends(params: YumaParams) -> None:
    r = yuma_epoch(np.zeros((3, 4)), [1.0, 2.0, 3.0], None, params)
    assert not r.incentive.any() and not r.dividends.any() and not r.consensus.any()
    np.testing.assert_allclose(r.active_stake, [1 / 6, 2 / 6, 3 / 6])


def test_none_bonds_equal_zero_bonds() -> None:
    w, s, _ = random_inputs(4)
    a = yuma_epoch(w, s, None, YumaParams())
    b = yuma_epoch(w, s, np.zeros_like(w), YumaParams())
    np.testing.assert_array_equal(a.bonds, b.bonds)
    np.testing.assert_array_equal(a.dividends, b.dividends)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (0, 0)])
def test_empty_inputs_give_empty_outputs(shape: tuple[int, int]) -> None:
    n_val, n_min = shape
    r = yuma_epoch(np.zeros(shape), np.ones(n_val), None, YumaParams())
    assert isinstance(r, YumaResult)
    assert r.consensus.shape == r.incentive.shape == (n_min,)
    assert r.dividends.shape == r.validator_trust.shape == r.active_stake.shape == (n_val,)
    assert r.bonds.shape == r.clipped_weights.shape == shape


@pytest.mark.parametrize("bad", [
    dict(weights=[[1.0, -0.1]], stake=[1.0]),
    dict(weights=[[1.0, 0.0]], stake=[1.0, 2.0]),
    dict(weights=[1.0, 0.0], stake=[1.0]),
    dict(weights=[[np.nan, 0.0]], stake=[1.0]),
])
def test_bad_inputs_are_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        yuma_epoch(bad["weights"], bad["stake"], None, YumaParams())


def test_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError):
        YumaParams(yuma_version="yuma1")
    with pytest.raises(ValueError):
        YumaParams(alpha_low=0.9, alpha_high=0.7)


@pytest.mark.gpu
@pytest.mark.parametrize("params", [YumaParams(liquid_alpha_enabled=True), YumaParams(yuma_version="yuma2"),
                                    YumaParams(liquid_alpha_enabled=True, bonds_penalty=0.5, storage="u16")],
                         ids=["yuma3_liquid", "yuma2", "yuma3_liquid_u16"])
def test_cupy_chain_epoch_matches_numpy(params: YumaParams) -> None:
    if not gpu_available():
        pytest.skip("CuPy with a working CUDA device is not available")
    cupy = get_xp("cupy")
    rng = np.random.default_rng(11)
    for n_val, n_min in ((40, 300), (1100, 64)):  # float32 and float64 median keys
        w = rng.random((n_val, n_min)) * (rng.random((n_val, n_min)) < 0.7)
        w[rng.random((n_val, n_min)) < 0.05] = 0.5
        state = EpochState(weights=w, stake=rng.lognormal(size=n_val), last_update=rng.integers(5, 10, n_val),
                           registered_at=rng.choice([0, 8, 9], size=n_min, p=[0.9, 0.05, 0.05]), epoch=10,
                           bonds=rng.random((n_val, n_min)) * 0.5, validator_uids=np.arange(n_val),
                           miner_uids=np.arange(n_min) + n_val - 3, owner_uid=n_val - 1)
        p = YumaParams(**{**params.__dict__, "max_allowed_validators": n_val - 5})
        on_cpu, on_gpu = chain_epoch(state, p, xp=np), chain_epoch(state, p, xp=cupy)
        for field in FIELDS + ("clipped_weights", "active_stake"):
            np.testing.assert_allclose(getattr(on_gpu, field), getattr(on_cpu, field), rtol=0, atol=1e-12,
                                       err_msg=field)
        np.testing.assert_array_equal(on_gpu.validator_permit, on_cpu.validator_permit)


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    if not gpu_available():
        pytest.skip("CuPy with a working CUDA device is not available")
    cupy = get_xp("cupy")
    doc = json.loads((VECTORS / "random_64x256_seed2_yuma3_liquid.json").read_text())
    on_cpu, on_gpu = replay(doc, xp=np), replay(doc, xp=cupy)
    for cpu_epoch, gpu_epoch in zip(on_cpu["epochs"], on_gpu["epochs"]):
        for field in FIELDS:
            np.testing.assert_allclose(gpu_epoch["outputs"][field], cpu_epoch["outputs"][field], rtol=0, atol=1e-12)
