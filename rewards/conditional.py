"""Exact Shapley values of an epoch's new rows in the KNN game where the lake is always present.

The game: v(S) = U'(lake + S) - U'(lake) for S a subset of the new rows, U' the KNN utility above chance (see
rewards.marginal). The lake is the background the new rows join, not a peer they share with: the values add up to
exactly what the new rows added to the lake on the test sample, and a lake row is never paid again.

Per test point only the lake's k nearest rows can matter (they are always present), and only the new rows closer
than the k-th of them (its *candidates*) can ever enter the k nearest, so every other new row is worth exactly 0
there. Give each row a gain g = 1[label matches] - c (c: the chance term), and missing lake rows (a lake of fewer
than k rows) g = 0. With the m candidates sorted (distance, then arrival; a lake row at an equal distance comes
first), a_r the number of lake rows ahead of candidate r, a_{m+1} = k and P[i] the sum of the first i lake gains,
a pairwise swap argument gives, with q (the number of present candidates ahead of r) uniform on 0..r-1:

    phi_r - phi_{r+1} = ( n1 (g_r - g_{r+1}) + n2 g_r - (P[k - lo] - P[k - hi]) ) / (k r)
    n1 = max(0, min(r, k - a_{r+1})),  lo = max(0, k - a_{r+1}),  hi = min(r, k - a_r),  n2 = max(0, hi - lo)

and phi_{m+1} = 0. With an empty lake (a = 0, g_lake = 0) this is Jia et al.'s recursion (VLDB 2019). The values
are exact for the given distances; tests check them against enumeration over every order of the players.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LakeTop:
    """Per test point its k nearest lake rows: canonical squared distances ascending (inf: no such row), whether
    each row's label matches the test point's, and whether the row exists at all."""

    dist: np.ndarray  # (T, k)
    match: np.ndarray  # (T, k) bool
    present: np.ndarray  # (T, k) bool

    def gains(self, chance: float) -> np.ndarray:
        return self.match.astype(np.float64) - chance * self.present


@dataclass(frozen=True)
class Pairs:
    """Candidate pairs: (test point, new row, canonical squared distance), sorted by (test, distance, new row)."""

    test: np.ndarray
    row: np.ndarray
    dist: np.ndarray

    @classmethod
    def sorted_from(cls, test: np.ndarray, row: np.ndarray, dist: np.ndarray) -> Pairs:
        order = np.lexsort((row, dist, test))
        return cls(test[order], row[order], dist[order])

    def keep(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.test[mask], self.row[mask], self.dist[mask])


def lake_utility(lake: LakeTop, y_test: np.ndarray, k: int, chance: float) -> float:
    """U'(lake): mean over test points of the lake's k nearest rows' summed gains / k."""
    return float(lake.gains(chance).sum(axis=1).sum() / (k * len(y_test)))


def conditional_shapley(lake: LakeTop, pairs: Pairs, y_new: np.ndarray, y_test: np.ndarray, k: int,
                        chance: float, n_new: int) -> np.ndarray:
    """Each new row's exact Shapley value in the lake-conditioned KNN game, averaged over test points.

    `pairs` are the candidate pairs of the new rows that play (every pair whose distance is below the test point's
    k-th lake distance), sorted by (test point, distance, row).
    """
    n_test = len(y_test)
    values = np.zeros(n_new, dtype=np.float64)
    if pairs.test.size == 0:
        return values
    assert lake.dist.shape[1] == k, "the lake view must hold exactly k neighbours per test point"
    lake_g = lake.gains(chance)
    prefix = np.zeros((n_test, k + 1))
    np.cumsum(lake_g, axis=1, out=prefix[:, 1:])
    t, row = pairs.test, pairs.row
    g = (y_new[row] == y_test[t]).astype(np.float64) - chance
    # a: lake rows at or before the candidate (a lake row at an equal distance goes first).
    a = (lake.dist[t] <= pairs.dist[:, None]).sum(axis=1)
    assert (a < k).all(), "a candidate lies closer than the k-th lake row"
    start = np.searchsorted(t, t, side="left")
    r = np.arange(t.size) - start + 1  # 1-based rank among the test point's candidates
    last = np.ones(t.size, dtype=bool)
    last[:-1] = t[1:] != t[:-1]
    a_next = np.where(last, k, np.roll(a, -1))
    g_next = np.where(last, 0.0, np.roll(g, -1))
    n1 = np.clip(np.minimum(r, k - a_next), 0, None)
    lo = np.maximum(0, k - a_next)
    hi = np.minimum(r, k - a)
    n2 = np.clip(hi - lo, 0, None)
    lake_part = np.where(hi > lo, prefix[t, k - lo] - prefix[t, np.clip(k - hi, 0, k)], 0.0)
    diff = (n1 * (g - g_next) + n2 * g - lake_part) / (k * r)
    # phi = suffix sums of diff within each test point, added from the far end (one sequential pass per group).
    counts = np.bincount(t, minlength=n_test)
    width = int(counts.max())
    grid = np.zeros((n_test, width))
    grid[t, r - 1] = diff
    rev = grid[:, ::-1]
    np.cumsum(rev, axis=1, out=rev)
    phi = grid[t, r - 1]
    # Per row, the sum over test points in a fixed order (the pairs' order), then the mean.
    values += np.bincount(row, weights=phi, minlength=n_new)
    values /= n_test
    return values


def merged_utility(lake: LakeTop, pairs: Pairs, y_new: np.ndarray, y_test: np.ndarray, k: int,
                   chance: float) -> float:
    """U'(lake + the new rows in `pairs`), from the merged k nearest: what the values must add up to over U'(lake)."""
    n_test = len(y_test)
    lake_g = lake.gains(chance)
    total = 0.0
    t_all = np.concatenate([np.repeat(np.arange(n_test), k), pairs.test])
    d_all = np.concatenate([lake.dist.reshape(-1), pairs.dist])
    # Lake first at equal distances: a lake entry sorts before a new row by the third key.
    src = np.concatenate([np.zeros(n_test * k, dtype=np.int64), np.ones(pairs.test.size, dtype=np.int64)])
    g_all = np.concatenate([lake_g.reshape(-1),
                            (y_new[pairs.row] == y_test[pairs.test]).astype(np.float64) - chance])
    order = np.lexsort((src, d_all, t_all))
    t_s, g_s = t_all[order], g_all[order]
    rank = np.arange(t_s.size) - np.searchsorted(t_s, t_s, side="left")
    total = float(g_s[rank < k].sum())
    return total / (k * n_test)
