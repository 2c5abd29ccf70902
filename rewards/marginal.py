"""What new rows add to everything the market already holds: the one valuation the market and validators share.

The lake is the background new rows join, not a peer they share with. An epoch's new rows are valued by exact
Shapley values of the game v(S) = U'(lake + S) - U'(lake) on a labelled test sample (the market's hidden holdout, or
a validator's own sample), U' the KNN utility above chance (rewards.conditional): the values add up to exactly what
the epoch's rows added to the lake's model on that sample (`RowValues.gain`), and a lake row is never paid twice.

Who may take part in that game:
- a row that equals, or lies within the near-duplicate tolerance of, any earlier row (the sender's own included;
  within the batch, the earlier arrival) is a *duplicate*: it earns 0, and `duplicate_of` says which row it copies;
- a row closer to what the market held than honest fresh draws lie (rewards.originality: a conformal test against
  the sample's own distances, false-positive rate ROW_ALPHA) is *unoriginal* and earns 0;
- a submission whose rows are unoriginal in bulk (GATE_ALPHA / GATE_P) earns 0 as a whole.
The rest play. Jittered and interpolated copies sit closer to the rows they were made from than fresh data does, so
they fail the originality test; and the KNN utility, which cannot tell density from information, never sees them.

Value is measured above chance. Plain KNN-Shapley takes the empty set as worth 0, so its last term, 1[label
matches] / N, pays even a row far from every test point with a random label about P(match) / N. The market's
utility is instead the KNN accuracy minus what labels drawn from the test sample's own class frequencies would
score, U'(S) = U(S) - fill(S) * sum_c pi_c^2, with fill(S) = min(k, |S|) / k: each row in a test point's k nearest
adds (1[label matches] - sum_c pi_c^2) / k. A row no better than chance is worth about 0 or less.

Splitting one batch over several keys changes no row's value: no step but the submission gate looks at who sent a
row, and the gate never fires on honest data but with probability GATE_P.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rewards.conditional import LakeTop, Pairs, conditional_shapley, lake_utility
from rewards.duplicates import DEFAULT_NEAR_TOL
from rewards.lake_view import LakeView
from rewards.neighbours import canonical_pairs, nearest_earlier, pairs_within
from rewards.originality import GATE_P, ROW_ALPHA, Originality, gate_p_value, p_values, reference_counts


@dataclass(frozen=True)
class RowValues:
    """Per new row: its value (0.0 unless it played), what it duplicates, and its originality figures.

    `duplicate_of` indexes the lake's rows as given (0..P-1: the first row with that content), then the new rows
    (P + i for new row i). Rows play in the game when fresh (no duplicate), judged (some test point could hold them
    among its k nearest), original and in a submission that passed the gate.
    """

    values: np.ndarray
    duplicate_of: np.ndarray
    pool_rows: int  # distinct lake rows plus the new rows admitted to the game
    originality: Originality | None = None
    unoriginal: np.ndarray | None = None  # bool per row: below ROW_ALPHA
    gated: np.ndarray | None = None  # bool per row: in a submission the gate zeroed
    group_gate_p: np.ndarray | None = None  # per group (submission): the gate's p-value
    values_without_originality: np.ndarray | None = None  # the same game with every fresh judged row playing
    gain: float = 0.0  # U'(lake + the rows that played) - U'(lake) on the sample: the values add up to this
    lake_utility: float = 0.0  # U'(lake) on the sample

    @property
    def fresh(self) -> np.ndarray:
        return self.duplicate_of < 0


def chance_term(y_test: np.ndarray) -> float:
    """sum_c pi_c^2: the mean over test points of the chance a label drawn from the sample's frequencies matches."""
    if y_test.size == 0:
        return 0.0
    _, counts = np.unique(y_test, return_counts=True)
    return math.fsum((counts.astype(np.float64) / y_test.size) ** 2)


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
    groups: object | None = None,
    originality: bool = True,
    view: LakeView | None = None,
) -> RowValues:
    """Value the new rows (in arrival order) against the prior rows (in the order they were accepted).

    `h_*` are the rows' stable hashes (rewards.duplicates.row_hashes). Distances use `scaling` (standard | range |
    none) learned from `x_test`; near duplicates are judged on features standardized by `x_test`, within `near_tol`.
    `groups` gives each new row's submission (the gate judges submissions; default: one). With `view` (a LakeView of
    the prior rows for this sample, kept between epochs) the prior arrays are not read and may be None.
    `originality=False` values the same game without the originality rules (to measure what they cost). It runs
    on NumPy: its cost is the new rows', not the lake's.
    """
    xt = _matrix(x_test, "test features")
    d = xt.shape[1]
    yt = np.asarray(y_test).reshape(-1)
    if yt.size != xt.shape[0] or yt.size == 0:
        raise ValueError("the test sample needs at least one row and one label per row")
    xn = _matrix(x_new, "new rows' features", d)
    yn = np.asarray(y_new).reshape(-1)
    hn = np.asarray(h_new).astype(np.uint64).reshape(-1)
    if not hn.size == yn.size == xn.shape[0]:
        raise ValueError("each new row needs one feature row, one label and one hash")
    if view is None:
        xpr = _matrix(x_prior, "prior rows' features", d)
        ypr = np.asarray(y_prior).reshape(-1)
        hp = np.asarray(h_prior).astype(np.uint64).reshape(-1)
        if not hp.size == ypr.size == xpr.shape[0]:
            raise ValueError("each prior row needs one feature row, one label and one hash")
        view = LakeView.build(xpr, ypr, hp, xt, yt, k=k, scaling=scaling, near_tol=near_tol)
    assert view.k == k and view.x_test.shape[0] == yt.size, "the lake view was built for another sample or k"
    m, n_lake = xn.shape[0], view.n_rows
    grp = np.zeros(m, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64).reshape(-1)
    if grp.size != m:
        raise ValueError(f"groups has {grp.size} entries for {m} new rows")

    # Duplicates: exact (hash) against the lake, then within the batch; then near, against both.
    in_lake = view.lookup(hn)
    _, first, inverse = np.unique(hn, return_index=True, return_inverse=True)
    earlier = first[inverse.reshape(-1)]
    exact = np.where(in_lake >= 0, in_lake, np.where(earlier < np.arange(m), n_lake + earlier, -1))
    near = view.near_duplicates(xn, exact < 0) if m else np.zeros(0, dtype=np.int64)
    dup = np.where(exact >= 0, exact, near)
    fresh = dup < 0

    values = np.zeros(m, dtype=np.float64)
    chance = chance_term(yt)
    match, present = view.matches()
    top = LakeTop(view.nearest.dist[:, :k], match[:, :k], present[:, :k])
    base = lake_utility(top, yt, k, chance)
    xs = view.scaling.apply(xn)
    fresh_rows = np.flatnonzero(fresh)
    q, r, dist = pairs_within(view.x_test, xs[fresh_rows], view.kth)
    pairs = Pairs.sorted_from(q, fresh_rows[r], dist)
    judged = np.zeros(m, dtype=bool)
    judged[pairs.row] = True
    orig = _originality(view, xs, fresh, judged, pairs) if originality else None
    unoriginal = np.zeros(m, dtype=bool)
    gated = np.zeros(m, dtype=bool)
    n_groups = int(grp.max()) + 1 if m else 0
    gate_p = np.ones(n_groups)
    if orig is not None:
        unoriginal = orig.below(ROW_ALPHA)
        for g in range(n_groups):
            in_g = (grp == g) & orig.judged
            gate_p[g] = gate_p_value(orig.closer[in_g], yt.size)
        gated = (gate_p < GATE_P)[grp] if m else gated
    plays = fresh & judged & ~unoriginal & ~gated
    values = conditional_shapley(top, pairs.keep(plays[pairs.row]), yn, yt, k, chance, m)
    without = conditional_shapley(top, pairs, yn, yt, k, chance, m) if orig is not None else values
    # Duplicates name rows as given: a lake row by its first position among the prior rows.
    dup_given = np.where(dup < 0, -1, np.where(dup < n_lake, view.origin[np.minimum(dup, max(n_lake - 1, 0))]
                                               if n_lake else -1, view.given + dup - n_lake))
    assert (dup_given < view.given + np.arange(m)).all(), "a row's source always arrived before it"
    admitted = fresh & ~unoriginal & ~gated  # in the game (an unjudged row plays too, for exactly 0)
    return RowValues(values, dup_given.astype(np.int64), n_lake + int(admitted.sum()), orig, unoriginal, gated,
                     gate_p, without, math.fsum(values.tolist()), base)


def _originality(view: LakeView, xs: np.ndarray, fresh: np.ndarray, judged: np.ndarray, pairs: Pairs) -> Originality:
    """Each judged row's squared distance to its nearest earlier row, and how many test points lie as close."""
    m = xs.shape[0]
    rows = np.flatnonzero(judged)
    nearest = nearest_earlier(xs, rows, fresh)
    if view.n_rows and rows.size:
        # The lake rows near each test point where the row could earn (see rewards.originality).
        ids = view.nearest.index[pairs.test]
        pos = np.searchsorted(rows, pairs.row)
        who = np.repeat(pos, ids.shape[1])
        lake_ids = ids.reshape(-1)
        ok = lake_ids >= 0
        key = np.sort(who[ok] * np.int64(view.n_rows) + lake_ids[ok])
        key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key  # (np.unique would import numpy.ma)
        who, lake_ids = key // view.n_rows, key % view.n_rows
        uniq, inv = np.unique(lake_ids, return_inverse=True)
        dist = canonical_pairs(xs[rows], view.scaled_rows(uniq), who, inv.reshape(-1))
        np.minimum.at(nearest, who, dist)
    closer = reference_counts(view.nearest.dist[:, 0], pairs.test, pairs.row, pairs.dist, rows, nearest, m)
    nearest_sq = np.full(m, np.nan)
    nearest_sq[rows] = nearest
    closer_all = np.full(m, -1, dtype=np.int64)
    closer_all[rows] = closer
    p = np.full(m, np.nan)
    p[rows] = p_values(closer, view.x_test.shape[0])
    return Originality(judged, nearest_sq, closer_all, p, int(view.x_test.shape[0]))
