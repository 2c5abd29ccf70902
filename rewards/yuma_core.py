"""Yuma Consensus core math (../shared/reference/yuma.md section 1, steps 4-11) on V validators x M miners.

All arithmetic is float64 and written against an array module `xp` (NumPy or CuPy). Reductions are `xp.sum` or
`xp.einsum` along a fixed axis rather than BLAS calls, so results do not depend on thread counts. The expensive
step is the stake-weighted median; it costs one value sort per column (see `_weighted_median`), and the rest of
the epoch is a handful of in-place elementwise passes over the V x M matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocol.settings_rules import YUMA_STORAGES as STORAGES, YUMA_VERSIONS
from rewards.backend import get_xp, to_numpy
from rewards.errors import SettingError

U16_MAX = 65535
_BLOCK_ELEMENTS = 1 << 16  # per median block on NumPy: sized (by measurement) to stay in cache


@dataclass(frozen=True)
class YumaParams:
    """Subnet hyperparameters with the chain's names and defaults (yuma.md section 3), as fractions.

    The chain stores kappa, bonds_penalty and the alpha bounds as u16 (x/65535), bonds_moving_average per million
    and the steepness per hundred; here they are the resulting fractions. The fields after alpha_sigmoid_steepness
    only matter to `chain_epoch` (rewards/yuma_chain.py), except storage and sparse_bonds, which both entry points
    honour; their defaults leave `yuma_epoch` exactly as it was.
    """

    kappa: float = 32767 / 65535
    bonds_penalty: float = 1.0
    bonds_moving_average: float = 0.9
    yuma_version: str = "yuma3"  # "yuma2" | "yuma3"
    liquid_alpha_enabled: bool = False
    alpha_low: float = 0.7
    alpha_high: float = 0.9
    alpha_sigmoid_steepness: float = 10.0
    max_allowed_validators: int = 128  # runtime initial value; the docs' 64 is the common mainnet setting
    activity_cutoff: float = 13.889  # epochs: ActivityCutoffFactorMilli / 1000 (5000 blocks at tempo 360)
    stake_threshold: float = 0.0  # StakeThreshold, in raw stake units; the owner is exempt
    owner_cut: float = 0.18  # SubnetOwnerCut (11796/65535); the rest splits by incentive and dividends
    storage: str = "float64"  # "u16": weights and bonds pass through the chain's u16 storage each epoch
    sparse_bonds: bool = False  # a zero penalized weight is an absent sparse entry (see _bonds_yuma3)

    def __post_init__(self) -> None:
        if self.yuma_version not in YUMA_VERSIONS:
            raise SettingError(f"yuma_version must be one of {YUMA_VERSIONS}, got {self.yuma_version!r}")
        if self.storage not in STORAGES:
            raise SettingError(f"storage must be one of {STORAGES}, got {self.storage!r}")
        for name in ("kappa", "bonds_penalty", "bonds_moving_average", "alpha_low", "alpha_high", "owner_cut"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SettingError(f"{name} must lie in [0, 1], got {value}")
        if self.alpha_low > self.alpha_high:
            raise SettingError(f"alpha_low ({self.alpha_low}) must not exceed alpha_high ({self.alpha_high})")
        if not math.isfinite(self.alpha_sigmoid_steepness):
            raise SettingError(f"alpha_sigmoid_steepness must be finite, got {self.alpha_sigmoid_steepness}")
        if int(self.max_allowed_validators) != self.max_allowed_validators or self.max_allowed_validators < 0:
            raise SettingError(f"max_allowed_validators must be a non-negative integer, got {self.max_allowed_validators}")
        for name in ("activity_cutoff", "stake_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise SettingError(f"{name} must be finite and non-negative, got {value}")


@dataclass(frozen=True)
class YumaResult:
    """One epoch's outputs as NumPy float64 arrays: per miner (M), per validator (V) or V x M."""

    consensus: np.ndarray  # M, the stake-weighted median C (not renormalized)
    incentive: np.ndarray  # M, normalized rank; all zero when no weight survives
    dividends: np.ndarray  # V, normalized; all zero when nothing survives
    validator_trust: np.ndarray  # V, share of each validator's weight that survived clipping
    bonds: np.ndarray  # V x M, to carry into the next epoch (with storage="u16": as stored, k/65535)
    active_stake: np.ndarray  # V, the normalized stake used
    clipped_weights: np.ndarray  # V x M, row-normalized weights clipped at consensus


# ------------------------------------------------------------------------------------------------------ helpers
def _normalize(xp: Any, x: Any) -> Any:
    """x / sum(x), or x unchanged when the sum is 0."""
    total = xp.sum(x)
    return x / total if float(total) > 0 else x


def _col_normalize(xp: Any, m: Any) -> Any:
    """Each column divided by its sum, in place; columns summing to 0 are all zero and stay so."""
    sums = xp.sum(m, axis=0)
    m /= xp.where(sums > 0, sums, 1.0)
    return m


def row_normalize(xp: Any, m: Any) -> Any:
    """Each row divided by its sum, in place; rows summing to 0 stay 0 (step 5f)."""
    sums = xp.sum(m, axis=1, keepdims=True)
    m /= xp.where(sums > 0, sums, 1.0)
    return m


def check_matrix(xp: Any, name: str, a: Any, *, upper: float = math.inf) -> None:
    """Raise ValueError unless every entry of `a` lies in [0, upper] (NaN fails: it compares false)."""
    if a.size == 0:
        return
    low, high = float(xp.min(a)), float(xp.max(a))
    if not (low >= 0.0 and high <= upper and math.isfinite(high)):
        bound = f"[0, {upper:g}]" if math.isfinite(upper) else "finite and non-negative"
        raise ValueError(f"{name} must be {'in ' if math.isfinite(upper) else ''}{bound}, got values in [{low}, {high}]")


def u16_weights(xp: Any, w: Any) -> Any:
    """Weights as `set_weights` stores them: each row max-upscaled so its max is 65535, then rounded (new array).

    Rounding is half away from zero, as fixed-point `round()`; a row of zeros stays zero.
    """
    row_max = xp.max(w, axis=1, keepdims=True) if w.shape[1] else xp.zeros((w.shape[0], 1))
    q = w * (U16_MAX / xp.where(row_max > 0, row_max, 1.0))
    q += 0.5
    return xp.floor(q, out=q)


def u16_bonds(xp: Any, bonds: Any, yuma_version: str) -> Any:
    """Bonds as the chain stores them, as u16 counts in float64 (new array): floor(65535 b).

    Yuma 2 first max-upscales each column to 1 (the stored form is column-relative; it is column-normalized on
    read), Yuma 3 stores the per-pair bonds as they are.
    """
    if yuma_version == "yuma2" and bonds.size:
        col_max = xp.max(bonds, axis=0)
        q = bonds / xp.where(col_max > 0, col_max, 1.0)  # divided first, as on chain: a column's max stores 65535
        q *= float(U16_MAX)
    else:
        q = bonds * float(U16_MAX)
    return xp.floor(q, out=q)


# ------------------------------------------------------------------------------------------------------ step 6
def _weighted_median(xp: Any, w: Any, s: Any, kappa: float) -> Any:
    """Per column, the largest w with stake(W_ij >= w) >= kappa over the rows with positive stake (step 6).

    Sorted ascending with cumulative stake, it is the value at the first index whose cumulative stake exceeds
    sum(s) - kappa. One value sort per column gives the row order too: each value, rounded to the key type, has
    its low mantissa bits replaced by its row index, and non-negative floats sort like their bit patterns. The key
    is monotone in the value, so the crossing element's key bits are those of the true median; only where another
    row shares them with a different value (rare outside exact ties) is that column settled by an exact argsort.
    """
    n_min = w.shape[1]
    keep = s > 0
    if not bool(xp.all(keep)):
        rows = xp.flatnonzero(keep)
        if rows.size == 0:
            return xp.zeros(n_min, dtype=xp.float64)
        w, s = w[rows], s[rows]
    n = s.shape[0]
    threshold = float(xp.sum(s)) - kappa
    # Rows are padded to whole scan blocks with zero-stake keys that sort last (see _first_above).
    width = 1 << max(3, min(6, ((n - 1).bit_length() + 1) // 2))
    n_pad = -(-n // width) * width
    index_bits = max(1, (n_pad - 1).bit_length())
    low = (1 << index_bits) - 1
    # float32 keys sort twice as fast; with 2^b rows they keep 23 - b mantissa bits, and about n / 2^(24 - b)
    # columns then need the exact fallback, so above 1024 rows the keys are float64.
    key_type, bits_type, pad_key = ((xp.float32, xp.int32, 0x7F000000) if index_bits <= 10
                                    else (xp.float64, xp.int64, 0x7FE0000000000000))
    # Blocks of miners x validators: every sort runs on contiguous memory, and on NumPy a block's passes stay in
    # cache (CuPy takes one block).
    block = min(n_min, n_min if xp is not np else max(1, _BLOCK_ELEMENTS // n_pad))
    keys = xp.empty((block, n_pad), dtype=key_type)
    key_bits = keys.view(bits_type)
    staging = xp.full((n_pad, block), pad_key, dtype=bits_type)  # cast first: same-type transposes are faster
    row_index = xp.arange(n_pad, dtype=bits_type)[:, None]
    order = xp.empty(keys.shape, dtype=xp.int64)
    cum = xp.empty(keys.shape, dtype=xp.float64)
    s_pad = xp.concatenate([s, xp.zeros(n_pad - n, dtype=xp.float64)])
    at = xp.empty(n_min, dtype=xp.int64)  # row of each column's crossing element
    first = xp.empty(n_min, dtype=xp.int64)  # its sorted position
    near = xp.empty((n_min, 3), dtype=bits_type)  # the sorted keys just before, at and after it
    step = xp.asarray([-1, 0, 1])
    for j0 in range(0, n_min, block):
        m = min(block, n_min - j0)
        k, o, c, staged = key_bits[:m], order[:m], cum[:m], staging[:, :m]
        staged.view(key_type)[:n] = w[:, j0:j0 + m]
        staged &= ~low
        staged |= row_index
        k[...] = staged.T
        keys[:m].sort(axis=1)
        xp.bitwise_and(k, low, out=o)
        xp.take(s_pad, o, out=c)
        f = xp.minimum(_first_above(xp, c, threshold, width), n - 1)  # kappa = 0: rounding; take the max
        r = xp.arange(m)
        first[j0:j0 + m] = f
        at[j0:j0 + m] = o[r, f]
        near[j0:j0 + m] = k[r[:, None], xp.clip(f[:, None] + step, 0, n - 1)]
    cols = xp.arange(n_min)
    median = w[at, cols]

    # Where a neighbour of the crossing shares its key bits, the group there may hold distinct values.
    near &= ~low
    high = near[:, 1]
    shared = ((first > 0) & (near[:, 0] == high)) | ((first < n - 1) & (near[:, 2] == high))
    if bool(xp.any(shared)):
        amb = xp.flatnonzero(shared)
        sub = w[:, amb]
        in_group = (sub.astype(key_type).view(bits_type) & ~low) == high[amb]
        mixed = xp.min(xp.where(in_group, sub, xp.inf), axis=0) != xp.max(xp.where(in_group, sub, -xp.inf), axis=0)
        if bool(xp.any(mixed)):
            fix = amb[mixed]
            median[fix] = _weighted_median_by_argsort(xp, w[:, fix], s, kappa)
    return median


def _first_above(xp: Any, c: Any, threshold: float, width: int) -> Any:
    """Per row of `c` (non-negative, length a multiple of width), the first index whose running sum exceeds threshold.

    NumPy's cumsum is a scalar loop, slower here than the sort itself, so the running sum takes two levels: block
    sums of `width` (a vectorized reduction), their running sum to find each row's block, then one block's.
    """
    m, n = c.shape
    block_end = xp.einsum("ijk->ij", c.reshape(m, n // width, width))
    xp.cumsum(block_end, axis=1, out=block_end)
    blocks = xp.minimum(xp.count_nonzero(block_end <= threshold, axis=1), n // width - 1)
    r = xp.arange(m)
    inside = c[r[:, None], (blocks * width)[:, None] + xp.arange(width)]
    xp.cumsum(inside, axis=1, out=inside)
    inside += xp.where(blocks > 0, block_end[r, blocks - 1], 0.0)[:, None]
    return blocks * width + xp.count_nonzero(inside <= threshold, axis=1)


def _weighted_median_by_argsort(xp: Any, w: Any, s: Any, kappa: float) -> Any:
    """Step 6 by an argsort of each column: the plain form, used for the few columns the fast path cannot settle."""
    order = xp.argsort(w, axis=0)
    cum = xp.cumsum(s[order], axis=0)
    first = xp.minimum(xp.sum(cum <= float(xp.sum(s)) - kappa, axis=0), w.shape[0] - 1)
    return xp.take_along_axis(w, xp.take_along_axis(order, first[None, :], axis=0), axis=0)[0]


# ------------------------------------------------------------------------------------------------------ step 11
def _liquid_alpha_inplace(xp: Any, neg_d: Any, p: YumaParams) -> None:
    """Turn -d (d in [0, 1], the buy or sell distance) into the pair's alpha, in place (step 11c).

    a = lo + (hi - lo) / (1 + exp(steep * (1/2 - d))); the chain clamps that exponent to [-20, 20], which can
    only bind when |steep| > 40. Factoring exp(steep/2) out would save a pass but is slower: most d are 0 or
    tiny, and libm's exp was measured 1.6x slower on such a mix than on arguments near steep/2.
    """
    steep = p.alpha_sigmoid_steepness
    neg_d += 0.5
    neg_d *= steep
    if abs(steep) > 40.0:
        xp.clip(neg_d, -20.0, 20.0, out=neg_d)
    xp.exp(neg_d, out=neg_d)
    neg_d += 1.0
    xp.divide(p.alpha_high - p.alpha_low, neg_d, out=neg_d)
    neg_d += p.alpha_low  # within [lo, hi] up to one rounding, so the chain's final clamp is left out


def _bonds_yuma3(xp: Any, w_pen: Any, b_prev: Any, c: Any, s: Any, incentive: Any, p: YumaParams) -> tuple[Any, Any]:
    """Step 11a: per-pair bonds B = min(1, (1 - a) B_prev + a W~); dividends = s * colnorm(B) @ incentive.

    Liquid alpha (11c) gives each pair a = lo + (hi - lo) * sigmoid(steepness * (d - 1/2)), with d the distance
    above consensus when buying (W~ >= B) and B - W~ when selling. Bonds enter in [0, 1], so d does too.
    With sparse_bonds, a pair whose penalized weight is 0 gets bond 0 instead of a decayed one under liquid alpha:
    the chain's sparse path only writes bonds for entries present in the row, and a zero weight is taken as absent
    (the SDK drops zeros before set_weights; clipping to a zero consensus removes the entry).
    """
    liquid = p.liquid_alpha_enabled and bool(xp.any(c != 0))
    if b_prev is None:
        b_prev = xp.zeros_like(w_pen)
    if liquid:
        bonds = w_pen - b_prev  # W~ - B: >= 0 when buying
        if p.bonds_penalty == 1.0:
            neg_d = xp.minimum(bonds, 0.0)  # W~ = min(W, C) <= C, so a buyer's distance above consensus is 0
        else:
            over = c - w_pen
            xp.minimum(over, 0.0, out=over)
            neg_d = xp.where(bonds >= 0, over, bonds)
        _liquid_alpha_inplace(xp, neg_d, p)
        bonds *= neg_d
        bonds += b_prev  # B + a (W~ - B) = (1 - a) B + a W~
        if p.sparse_bonds:
            bonds *= w_pen > 0
        # With B, W~ in [0, 1] and a < 1 - 2^-51, the rounded B + a (W~ - B) cannot pass max(B, W~): no clamp.
        if p.alpha_high > 1.0 - 1e-12:
            xp.minimum(bonds, 1.0, out=bonds)
    else:
        alpha = 1.0 - p.bonds_moving_average
        bonds = w_pen * alpha
        bonds += (1.0 - alpha) * b_prev
        xp.minimum(bonds, 1.0, out=bonds)
    col = xp.sum(bonds, axis=0)
    per_bond = incentive / xp.where(col > 0, col, 1.0)  # colnorm(B) @ I without forming colnorm(B)
    dividends = s * xp.einsum("ij,j->i", bonds, per_bond)
    return bonds, _normalize(xp, dividends)


def _bonds_yuma2(xp: Any, w_pen: Any, b_prev: Any, s: Any, incentive: Any, p: YumaParams) -> tuple[Any, Any]:
    """Step 11b: B = colnorm(a * colnorm(s W~) + (1 - a) * colnorm(B_prev)); dividends = B @ incentive."""
    alpha = 1.0 - p.bonds_moving_average
    bonds = _col_normalize(xp, w_pen * s[:, None])
    bonds *= alpha
    if b_prev is not None:
        prev = _col_normalize(xp, xp.array(b_prev, dtype=xp.float64, copy=True))
        prev *= 1.0 - alpha
        bonds += prev
    bonds = _col_normalize(xp, bonds)
    return bonds, _normalize(xp, xp.einsum("ij,j->i", bonds, incentive))


# ------------------------------------------------------------------------------------------------------ epoch
@dataclass(frozen=True)
class CoreOutput:
    """Steps 6-11 as xp arrays (before any u16 storage of the bonds)."""

    consensus: Any
    incentive: Any
    dividends: Any
    validator_trust: Any
    bonds: Any
    clipped_weights: Any


def epoch_core(xp: Any, w: Any, s: Any, b_prev: Any, p: YumaParams) -> CoreOutput:
    """Steps 6-11 on row-normalized weights `w` (overwritten) and active stake `s` (normalized, or all zero).

    `b_prev` (V x M or None) is read only; the caller has already masked it (recently registered miners).
    """
    c = _weighted_median(xp, w, s, p.kappa)
    beta = p.bonds_penalty
    if beta == 1.0:
        w_clip = w_pen = xp.minimum(w, c, out=w)  # step 7; step 10 with beta = 1 is the clipped weight
    else:
        w_clip = xp.minimum(w, c)
        if beta == 0.0:
            w_pen = w
        else:
            w_pen = w_clip - w
            w_pen *= beta
            w_pen += w  # W + beta (clip(W) - W)
    trust = xp.sum(w_clip, axis=1)  # step 8
    incentive = _normalize(xp, xp.einsum("i,ij->j", s, w_clip))  # step 9
    if p.yuma_version == "yuma3":
        bonds, dividends = _bonds_yuma3(xp, w_pen, b_prev, c, s, incentive, p)
    else:
        bonds, dividends = _bonds_yuma2(xp, w_pen, b_prev, s, incentive, p)
    return CoreOutput(c, incentive, dividends, trust, bonds, w_clip)


def yuma_epoch(weights: Any, stake: Any, bonds_prev: Any, params: YumaParams, *, xp: Any = None) -> YumaResult:
    """Run one Yuma epoch (steps 4-11) on V x M weights, V stakes and the previous V x M bonds (None: zeros).

    Every validator given is taken as active and permitted; masks for permits, activity, self-weights and
    registrations are `chain_epoch`'s job (or the caller's: zero the rows, columns or stakes before calling).
    """
    xp = get_xp() if xp is None else xp
    w_in = xp.asarray(weights, dtype=xp.float64)
    s = xp.asarray(stake, dtype=xp.float64)
    if w_in.ndim != 2:
        raise ValueError(f"weights must be a V x M matrix, got shape {tuple(w_in.shape)}")
    n_val, n_min = w_in.shape
    if s.shape != (n_val,):
        raise ValueError(f"stake must have one entry per validator ({n_val}), got shape {tuple(s.shape)}")
    b_prev = None if bonds_prev is None else xp.asarray(bonds_prev, dtype=xp.float64)
    if b_prev is not None and b_prev.shape != (n_val, n_min):
        raise ValueError(f"bonds_prev must have the weights' shape {(n_val, n_min)}, got {tuple(b_prev.shape)}")
    check_matrix(xp, "stake", s)
    if b_prev is not None:
        # Yuma 3 bonds are per-pair fractions (u16/65535 on chain); Yuma 2 column-normalizes them on read.
        check_matrix(xp, "bonds_prev", b_prev, upper=1.0 if params.yuma_version == "yuma3" else math.inf)

    s = _normalize(xp, s)  # step 4
    if n_val == 0 or n_min == 0:
        zeros_m, zeros_v = xp.zeros(n_min, dtype=xp.float64), xp.zeros(n_val, dtype=xp.float64)
        empty = xp.zeros((n_val, n_min), dtype=xp.float64)
        return _result(zeros_m, zeros_m, zeros_v, zeros_v, empty, s, empty)
    # Weights: non-negative (NaN fails the comparison) with finite row sums, so also finite entries.
    sums = xp.sum(w_in, axis=1, keepdims=True)
    if not (float(xp.min(w_in)) >= 0.0 and bool(xp.all(xp.isfinite(sums)))):
        raise ValueError("weights must be finite and non-negative (with finite row sums)")
    if params.storage == "u16":
        w = row_normalize(xp, u16_weights(xp, w_in))
    else:
        w = w_in / xp.where(sums > 0, sums, 1.0)  # step 5f, into a new array the core may overwrite
    out = epoch_core(xp, w, s, b_prev, params)
    bonds = out.bonds
    if params.storage == "u16":
        bonds = u16_bonds(xp, bonds, params.yuma_version)
        bonds /= U16_MAX
    return _result(out.consensus, out.incentive, out.dividends, out.validator_trust, bonds, s, out.clipped_weights)


def _result(c: Any, i: Any, d: Any, t: Any, b: Any, s: Any, w_clip: Any) -> YumaResult:
    """Pack xp arrays into a YumaResult of NumPy arrays."""
    return YumaResult(
        consensus=to_numpy(c),
        incentive=to_numpy(i),
        dividends=to_numpy(d),
        validator_trust=to_numpy(t),
        bonds=to_numpy(b),
        active_stake=to_numpy(s),
        clipped_weights=to_numpy(w_clip),
    )
