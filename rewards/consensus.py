"""Yuma Consensus epoch (../shared/reference/yuma.md section 1), vectorized over validators x miners.

All arithmetic is float64 and written against an array module `xp` (NumPy or CuPy). Sums are elementwise products
reduced with `xp.sum` along a fixed axis rather than BLAS matmuls, so the reduction order does not depend on threads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewards.backend import get_xp, to_numpy

YUMA_VERSIONS = ("yuma2", "yuma3")
DOC_VERSIONS = ("yuma2", "yuma3", "yuma3_liquid")


@dataclass(frozen=True)
class YumaParams:
    """Hyperparameters of one epoch, as fractions (the chain stores them as u16 or per-million integers)."""

    kappa: float = 32767 / 65535
    bonds_penalty: float = 1.0
    bonds_moving_average: float = 0.9
    yuma_version: str = "yuma3"  # "yuma2" | "yuma3"
    liquid_alpha_enabled: bool = False
    alpha_low: float = 0.7
    alpha_high: float = 0.9
    alpha_sigmoid_steepness: float = 10.0

    def __post_init__(self) -> None:
        if self.yuma_version not in YUMA_VERSIONS:
            raise ValueError(f"yuma_version must be one of {YUMA_VERSIONS}, got {self.yuma_version!r}")
        for name in ("kappa", "bonds_penalty", "bonds_moving_average", "alpha_low", "alpha_high"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.alpha_low > self.alpha_high:
            raise ValueError(f"alpha_low ({self.alpha_low}) must not exceed alpha_high ({self.alpha_high})")


@dataclass(frozen=True)
class YumaResult:
    """One epoch's outputs as NumPy float64 arrays: per miner (M), per validator (V) or V x M."""

    consensus: np.ndarray  # M, the stake-weighted median C (not renormalized)
    incentive: np.ndarray  # M, normalized rank; all zero when no weight survives
    dividends: np.ndarray  # V, normalized; all zero when nothing survives
    validator_trust: np.ndarray  # V, share of each validator's weight that survived clipping
    bonds: np.ndarray  # V x M, to carry into the next epoch
    active_stake: np.ndarray  # V, the normalized stake used
    clipped_weights: np.ndarray  # V x M, row-normalized weights clipped at consensus


def _normalize(xp: Any, x: Any) -> Any:
    """x / sum(x), or x unchanged when the sum is 0."""
    total = xp.sum(x)
    return x / total if float(total) > 0 else x


def _col_normalize(xp: Any, m: Any) -> Any:
    """Each column divided by its sum; columns summing to 0 are left as they are."""
    sums = xp.sum(m, axis=0, keepdims=True)
    return xp.where(sums > 0, m / xp.where(sums > 0, sums, 1.0), m)


def _row_normalize(xp: Any, m: Any) -> Any:
    """Each row divided by its sum; rows summing to 0 stay 0."""
    sums = xp.sum(m, axis=1, keepdims=True)
    return xp.where(sums > 0, m / xp.where(sums > 0, sums, 1.0), m)


def _weighted_median(xp: Any, w: Any, s: Any, kappa: float) -> Any:
    """Per column, the largest w with stake(W_ij >= w) >= kappa (step 6).

    Sorted ascending with cumulative stake, it is the value at the first index whose cumulative stake exceeds
    sum(s) - kappa. Zero-stake rows add nothing to the cumulative sum, so they can never be that index.
    """
    total = float(xp.sum(s))
    if total <= 0:
        return xp.zeros(w.shape[1], dtype=xp.float64)
    order = xp.argsort(w, axis=0)
    w_sorted = xp.take_along_axis(w, order, axis=0)
    cum = xp.cumsum(s[order], axis=0)
    # cum is nondecreasing, so the first index with cum > minority is the count of entries with cum <= minority.
    first = xp.sum(cum <= total - kappa, axis=0)
    first = xp.minimum(first, w.shape[0] - 1)  # kappa = 0: rounding may leave no index; take the column max
    return xp.take_along_axis(w_sorted, first[None, :], axis=0)[0]


def _liquid_alpha(xp: Any, w_pen: Any, b_prev: Any, c: Any, p: YumaParams) -> Any:
    """Per-pair EMA alpha of step 11c: a sigmoid of how far the weight sits above consensus (buy) or below the bond."""
    buying = w_pen >= b_prev
    diff = xp.where(buying, xp.clip(w_pen - c[None, :], 0.0, 1.0), xp.clip(b_prev - w_pen, 0.0, 1.0))
    exponent = xp.clip(-p.alpha_sigmoid_steepness * (diff - 0.5), -20.0, 20.0)
    sigmoid = 1.0 / (1.0 + xp.exp(exponent))
    return xp.clip(p.alpha_low + sigmoid * (p.alpha_high - p.alpha_low), p.alpha_low, p.alpha_high)


def _bonds_yuma3(xp: Any, w_pen: Any, b_prev: Any, c: Any, s: Any, incentive: Any, p: YumaParams) -> tuple[Any, Any]:
    """Step 11a: per-pair bonds capped at 1, dividends = stake times column-normalized bonds times incentive."""
    if p.liquid_alpha_enabled and bool(xp.any(c != 0)):
        alpha = _liquid_alpha(xp, w_pen, b_prev, c, p)
    else:
        alpha = 1.0 - p.bonds_moving_average
    bonds = xp.minimum(1.0, (1.0 - alpha) * b_prev + xp.maximum(0.0, alpha * w_pen))
    dividends = s * xp.sum(_col_normalize(xp, bonds) * incentive[None, :], axis=1)
    return bonds, _normalize(xp, dividends)


def _bonds_yuma2(xp: Any, w_pen: Any, b_prev: Any, s: Any, incentive: Any, p: YumaParams) -> tuple[Any, Any]:
    """Step 11b: column-normalized EMA of the stake-weighted bond deltas; dividends = bonds times incentive."""
    alpha = 1.0 - p.bonds_moving_average
    delta = _col_normalize(xp, s[:, None] * w_pen)
    bonds = _col_normalize(xp, alpha * delta + (1.0 - alpha) * _col_normalize(xp, b_prev))
    dividends = xp.sum(bonds * incentive[None, :], axis=1)
    return bonds, _normalize(xp, dividends)


def yuma_epoch(weights: Any, stake: Any, bonds_prev: Any, params: YumaParams, *, xp: Any = None) -> YumaResult:
    """Run one Yuma epoch (steps 4-11) on V x M weights, V stakes and the previous V x M bonds (None: zeros).

    Every validator given is taken as active and permitted; masks for permits, activity, self-weights and
    registrations are the caller's job (zero the rows, columns or stakes before calling).
    """
    xp = get_xp() if xp is None else xp
    w = xp.asarray(weights, dtype=xp.float64)
    s = xp.asarray(stake, dtype=xp.float64)
    if w.ndim != 2:
        raise ValueError(f"weights must be a V x M matrix, got shape {tuple(w.shape)}")
    n_val, n_min = w.shape
    if s.shape != (n_val,):
        raise ValueError(f"stake must have one entry per validator ({n_val}), got shape {tuple(s.shape)}")
    b_prev = xp.zeros((n_val, n_min), dtype=xp.float64) if bonds_prev is None else xp.asarray(bonds_prev, dtype=xp.float64)
    if b_prev.shape != (n_val, n_min):
        raise ValueError(f"bonds_prev must have the weights' shape {(n_val, n_min)}, got {tuple(b_prev.shape)}")
    for name, a in (("weights", w), ("stake", s), ("bonds_prev", b_prev)):
        if a.size and not (bool(xp.all(xp.isfinite(a))) and bool(xp.all(a >= 0))):
            raise ValueError(f"{name} must be finite and non-negative")

    s = _normalize(xp, s)  # step 4
    if n_val == 0 or n_min == 0:
        zeros_m = xp.zeros(n_min, dtype=xp.float64)
        zeros_v = xp.zeros(n_val, dtype=xp.float64)
        empty = xp.zeros((n_val, n_min), dtype=xp.float64)
        return _result(zeros_m, zeros_m, zeros_v, zeros_v, empty, s, empty)

    w = _row_normalize(xp, w)  # step 5f
    c = _weighted_median(xp, w, s, params.kappa)  # step 6
    w_clip = xp.minimum(w, c[None, :])  # step 7
    trust = xp.sum(w_clip, axis=1)  # step 8
    incentive = _normalize(xp, xp.sum(s[:, None] * w_clip, axis=0))  # step 9
    w_pen = w + params.bonds_penalty * (w_clip - w)  # step 10
    if params.yuma_version == "yuma3":
        bonds, dividends = _bonds_yuma3(xp, w_pen, b_prev, c, s, incentive, params)
    else:
        bonds, dividends = _bonds_yuma2(xp, w_pen, b_prev, s, incentive, params)
    return _result(c, incentive, dividends, trust, bonds, s, w_clip)


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


def params_from_doc(doc: dict) -> YumaParams:
    """YumaParams from a yuma-vectors document's "version" and "params"."""
    version = doc["version"]
    if version not in DOC_VERSIONS:
        raise ValueError(f"unknown yuma-vectors version {version!r}; expected one of {DOC_VERSIONS}")
    p = doc["params"]
    liquid = p.get("liquid_alpha", {})
    defaults = YumaParams()
    return YumaParams(
        kappa=float(p.get("kappa", defaults.kappa)),
        bonds_penalty=float(p.get("bond_penalty", defaults.bonds_penalty)),
        bonds_moving_average=float(p.get("bonds_moving_average", defaults.bonds_moving_average)),
        yuma_version="yuma2" if version == "yuma2" else "yuma3",
        liquid_alpha_enabled=version == "yuma3_liquid",
        alpha_low=float(liquid.get("alpha_low", defaults.alpha_low)),
        alpha_high=float(liquid.get("alpha_high", defaults.alpha_high)),
        alpha_sigmoid_steepness=float(liquid.get("steepness", defaults.alpha_sigmoid_steepness)),
    )


def replay(doc: dict, *, xp: Any = None) -> dict:
    """Replay a yuma-vectors document, carrying bonds across epochs; each epoch's "expected" becomes "outputs"."""
    params = params_from_doc(doc)
    out = copy.deepcopy(doc)
    bonds: np.ndarray | None = None
    for epoch in out["epochs"]:
        weights = np.asarray(epoch["W"], dtype=np.float64)
        if bonds is not None and epoch.get("reset_bond_columns"):
            bonds = bonds.copy()
            bonds[:, list(epoch["reset_bond_columns"])] = 0.0
        r = yuma_epoch(weights, epoch["S"], bonds, params, xp=xp)
        bonds = r.bonds
        epoch.pop("expected", None)
        epoch["outputs"] = {
            "consensus": r.consensus.tolist(),
            "incentive": r.incentive.tolist(),
            "dividends": r.dividends.tolist(),
            "validator_trust": r.validator_trust.tolist(),
            "bonds": r.bonds.tolist(),
        }
    return out
