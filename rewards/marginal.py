"""What new rows add to everything the market already holds: the one valuation the market and validators share.

New rows are valued by exact KNN-Shapley on the pool of every row already accepted for the task (the lake, all
epochs, each distinct row once) plus the new rows that are not duplicates, against a labelled test sample (the
market's hidden holdout, or a validator's own sample); only the new rows are paid. A new row that equals, or lies
within the near-duplicate tolerance of, any earlier row (the sender's own included; within the batch, the earlier
arrival) is a duplicate: it earns 0, stays out of the pool, and `duplicate_of` says which earlier row it copies.

Value is measured above chance. Plain KNN-Shapley takes the empty set as worth 0, so its last term, 1[label
matches] / N, pays even a row far from every test point with a random label about P(match) / N: on binary data a
random-label row earned half of an honest one. The market's utility is instead the KNN accuracy minus what labels
drawn from the test sample's own class frequencies would score, U'(S) = U(S) - fill(S) * sum_c pi_c^2, with fill(S) =
min(k, |S|) / k. The subtracted game is symmetric, so its Shapley value is the same for every row of the pool:
min(k, N) / (k N) * sum_c pi_c^2 per row, and v' = v - that constant is exact KNN-Shapley of U'. A row no better than
chance is then worth about 0 or less (and negative value weighs 0 in the house weights).

Splitting one batch over several keys changes nothing here: no step looks at who sent a row, so each row's value is
bit-identical however the rows are grouped, as long as their order is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from rewards.duplicates import DEFAULT_NEAR_TOL, exact_duplicate_of, near_duplicate_of
from rewards.scaling import fit_scaling
from rewards.valuation import MAX_VALUATION_BYTES, knn_shapley

MAX_POOL_ROWS = 2_000_000
"""Default cap on a task's valuation pool (rows). Up to it the values are exact against the whole lake. Beyond it the
oldest prior rows leave the pool (they still count for duplicates, judged on the whole lake): values are then exact
KNN-Shapley against the latest MAX_POOL_ROWS rows, and `RowValues.left_out` says how many rows that dropped. At 32
features a 2M-row pool holds about 1 GB of features (original and scaled copies) and takes minutes per 2,000 test
points on 2 cores (see `make bench`)."""


@dataclass(frozen=True)
class RowValues:
    """Per new row: its value (0.0 for a duplicate) and the earliest earlier row it duplicates (-1: none).

    `duplicate_of` indexes the prior rows as given (0..P-1), then the new rows (P + i for new row i).
    """

    values: np.ndarray
    duplicate_of: np.ndarray
    pool_rows: int  # rows KNN-Shapley ranked: distinct prior rows kept plus fresh new rows
    left_out: int = 0  # distinct prior rows left out of the pool by max_pool_rows

    @property
    def fresh(self) -> np.ndarray:
        return self.duplicate_of < 0


def chance_value(y_test: np.ndarray, k: int, n_pool: int) -> float:
    """Each pool row's Shapley value in the chance game fill(S) * sum_c pi_c^2 (see the module docstring)."""
    if n_pool == 0 or y_test.size == 0:
        return 0.0
    _, counts = np.unique(y_test, return_counts=True)
    chance = math.fsum((counts.astype(np.float64) / y_test.size) ** 2)  # mean over test points of pi(y_t)
    return min(k, n_pool) / (k * n_pool) * chance


def _matrix(x: object, what: str, d: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or (d is not None and a.shape[1] != d):
        want = f" with {d} columns" if d is not None else ""
        raise ValueError(f"{what} must be a 2-D array (rows x features){want}, got shape {a.shape}")
    if not np.isfinite(a).all():
        # The quality gate refuses non-finite features at ingest, so reaching here is a bug upstream, not bad input.
        raise ValueError(f"{what} holds a non-finite feature; valuation needs finite features")
    return a


def value_new_rows(
    x_prior: object, y_prior: object, h_prior: object,
    x_new: object, y_new: object, h_new: object,
    x_test: object, y_test: object,
    *,
    k: int = 5,
    scaling: str = "standard",
    near_tol: float = DEFAULT_NEAR_TOL,
    max_pool_rows: int = MAX_POOL_ROWS,
    xp: ModuleType | str | None = None,
    max_bytes: int = MAX_VALUATION_BYTES,
) -> RowValues:
    """Value the new rows (in arrival order) marginally to the prior rows (in the order they were accepted).

    `h_*` are the rows' stable hashes (rewards.duplicates.row_hashes). Distances for valuation use `scaling`
    (standard | range | none) learned from `x_test`; near duplicates are judged on features standardized by
    `x_test` whatever `scaling` says, within `near_tol`.
    """
    xt = _matrix(x_test, "test features")
    d = xt.shape[1]
    xn = _matrix(x_new, "new rows' features", d)
    xpr = _matrix(x_prior, "prior rows' features", d)
    hn = np.asarray(h_new).astype(np.uint64).reshape(-1)
    hp = np.asarray(h_prior).astype(np.uint64).reshape(-1)
    yn, ypr = np.asarray(y_new).reshape(-1), np.asarray(y_prior).reshape(-1)
    if not (hn.size == yn.size == xn.shape[0] and hp.size == ypr.size == xpr.shape[0]):
        raise ValueError("each of the new and prior rows needs one feature row, one label and one hash")
    if max_pool_rows < 1:
        raise ValueError(f"max_pool_rows must be at least 1, got {max_pool_rows}")
    n_prior = xpr.shape[0]

    # One pass over every hash, prior rows first: a prior row's source marks it a repeat within the lake, a new row's
    # is its exact duplicate (a prior row, or an earlier new one).
    source = exact_duplicate_of(np.concatenate([hp, hn]))
    exact = source[n_prior:]
    std = fit_scaling(xt, "standard").scale
    near = near_duplicate_of(xn, xpr, std, near_tol, candidates=exact < 0)
    duplicate_of = np.where(exact >= 0, exact, near)
    fresh = duplicate_of < 0

    # Each distinct prior row once (its first acceptance), the latest ones if the cap binds.
    kept = np.flatnonzero(source[:n_prior] < 0)
    room = max(max_pool_rows - int(fresh.sum()), 0)
    left_out = max(kept.size - room, 0)
    kept = kept[left_out:]

    values = np.zeros(xn.shape[0], dtype=np.float64)
    if fresh.any():
        s = fit_scaling(xt, scaling)
        # Built in place: the prior rows are the big part, so no scaled or gathered temporary copy of them.
        pool_x = np.empty((kept.size + int(fresh.sum()), d))
        np.take(xpr, kept, axis=0, out=pool_x[:kept.size])
        pool_x[kept.size:] = xn[fresh]
        s.apply(pool_x, out=pool_x)
        pool_y = np.concatenate([ypr[kept], yn[fresh]]) if kept.size else yn[fresh]
        all_values = knn_shapley(pool_x, pool_y, s.apply(xt), np.asarray(y_test).reshape(-1), k=k, xp=xp,
                                 max_bytes=max_bytes)
        values[fresh] = all_values[kept.size:] - chance_value(np.asarray(y_test).reshape(-1), k, pool_x.shape[0])
    assert (duplicate_of < n_prior + np.arange(xn.shape[0])).all(), "a row's source always arrived before it"
    return RowValues(values, duplicate_of, int(kept.size + fresh.sum()), int(left_out))
