"""What new rows add to everything the market already holds: the one valuation the market and validators share.

The lake is the background new rows join, not a peer they share with. An epoch's new rows are valued by exact
Shapley values of the game v(S) = U'(lake + S) - U'(lake) on a labelled test sample (the market's hidden holdout, or
a validator's own sample), U' the KNN utility above chance (rewards.conditional): the values add up to exactly what
the epoch's rows added to the lake's model on that sample (`RowValues.gain`), and a lake row is never paid twice.

Each test point weighs at most R new rows (`new_rows_cap`: max(4k, 2^16 / T)): precisely, v(S) = sum over test
points t of U'_t((lake + S) within C_t) - U'_t(lake), averaged, where C_t is the lake and the R nearest of the rows
that play (canonical distance, then arrival) below t's k-th lake distance. This is still an exact Shapley game, and
since R >= k every test point's k nearest of lake + played rows lie in C_t: the values still add up exactly to
U'(lake + played rows) - U'(lake). The cap binds only where a test point's k-th lake radius holds more than R new
rows: an empty lake (every task's first epoch: without the cap, T x m pairs, and 300,000 rows against 2,000 test rows
ran out of memory) or an epoch much larger than the lake; the work is then O(T x R), whatever the number of rows.

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

from rewards.conditional import LakeTop, Pairs, conditional_shapley, lake_utility, merged_utility
from rewards.duplicates import DEFAULT_NEAR_TOL
from rewards.lake_view import LakeView
from rewards.neighbours import Nearest, canonical_pairs, nearest_k
from rewards.originality import GATE_P, ROW_ALPHA, Originality, gate_p_value, p_values, reference_counts


NEW_ROWS_PER_K = 4
"""The game's cap is at least NEW_ROWS_PER_K x k new rows per test point (see `new_rows_cap`)."""
PAIR_BUDGET = 2**16
"""... and at least PAIR_BUDGET / T (T test points): a sample's game weighs at most max(4k T, PAIR_BUDGET) pairs."""
ORIGINALITY_RANKS_PER_K = 2
"""Originality compares a judged row with the earlier rows up to ORIGINALITY_RANKS_PER_K x k places before or after
it in the order of each test point where it could earn (see `_originality`)."""


def new_rows_cap(k: int, n_test: int) -> int:
    """R, the most new rows one test point weighs: its R nearest fresh rows (by canonical distance, then arrival) of
    those below its lake's k-th distance.

    Why a cap: with an empty lake (every task's first epoch) or one of fewer than k rows near a test point, that
    radius is infinite and every new row would be weighed at every test point: T x m pairs, and originality over all
    of them (an epoch of 300,000 rows against 2,000 test rows ran out of memory). R = max(4k, PAIR_BUDGET // T)
    bounds the game's pairs by max(4k T, 2^16), and leaves the game unchanged wherever the cap does not bind: every
    game that weighed at most that many pairs (small samples and epochs), and any lake whose k-th radius holds fewer
    than R new rows (an epoch up to about 4x the lake). R >= k keeps every test point's k nearest of lake + new rows
    among the rows it weighs, so the values still add up to the gain.
    """
    return max(NEW_ROWS_PER_K * int(k), PAIR_BUDGET // max(int(n_test), 1))


def originality_ranks(k: int) -> int:
    """w: a judged row is compared with the earlier rows within w places of it at the test points where it could
    earn (a copy sits next to its source in distance to any test point, so next to it in order)."""
    return ORIGINALITY_RANKS_PER_K * int(k)


@dataclass(frozen=True)
class RowValues:
    """Per new row: its value (0.0 unless it played), what it duplicates, and its originality figures.

    `duplicate_of` indexes the lake's rows as given (0..P-1: the first row with that content), then the new rows
    (P + i for new row i). Rows play in the game when fresh (no duplicate), judged (some test point weighs them: one
    of its R nearest fresh rows below its k-th lake distance), original and in a submission that passed the gate.
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
    on NumPy: its cost is the new rows', not the lake's. Each test point weighs at most `new_rows_cap(k, T)` new rows,
    its nearest (see the module docstring): one pass over the new rows finds them, and the game, originality and the
    gate then cost O(T x R) pairs, in bounded memory, however many rows the epoch holds.
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
    cap = new_rows_cap(k, yt.size)
    # Per test point its nearest fresh rows below the lake's k-th distance: the first `cap` are its share of the
    # game, the next `originality_ranks` what originality compares the last of them with.
    hood = nearest_k(view.x_test, xs[fresh_rows], cap + originality_ranks(k) if originality else cap,
                     ids=fresh_rows, limit=view.kth)
    pairs = _first(hood, np.ones(m, dtype=bool), cap)
    judged = np.zeros(m, dtype=bool)
    judged[pairs.row] = True
    orig = _originality(view, xs, judged, pairs, hood, originality_ranks(k)) if originality else None
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
    # The game of the rows that play: per test point the `cap` nearest of them (the judged rows' game, `without`,
    # is `pairs` itself: every fresh row a test point holds is judged).
    played = pairs if plays[pairs.row].all() else _first(hood, plays, cap, view.x_test, xs, view.kth)
    values = conditional_shapley(top, played, yn, yt, k, chance, m)
    without = conditional_shapley(top, pairs, yn, yt, k, chance, m) if orig is not None else values
    gain = math.fsum(values.tolist())
    # Efficiency: cap >= k, so each test point's k nearest of lake + played rows are among the rows it weighs.
    exact = merged_utility(top, played, yn, yt, k, chance) - base
    assert abs(gain - exact) <= 1e-9 * max(1.0, abs(exact)), f"values add up to {gain}, not the gain {exact}"
    # Duplicates name rows as given: a lake row by its first position among the prior rows.
    dup_given = np.where(dup < 0, -1, np.where(dup < n_lake, view.origin[np.minimum(dup, max(n_lake - 1, 0))]
                                               if n_lake else -1, view.given + dup - n_lake))
    assert (dup_given < view.given + np.arange(m)).all(), "a row's source always arrived before it"
    admitted = fresh & ~unoriginal & ~gated  # in the game (an unjudged row plays too, for exactly 0)
    return RowValues(values, dup_given.astype(np.int64), n_lake + int(admitted.sum()), orig, unoriginal, gated,
                     gate_p, without, gain, base)


def _first(hood: Nearest, member: np.ndarray, cap: int, x_test: np.ndarray | None = None,
           xs: np.ndarray | None = None, limit: np.ndarray | None = None) -> Pairs:
    """Per test point its `cap` nearest rows among the `member` rows, as pairs sorted by (test, distance, row).

    `hood` holds each test point's nearest fresh rows (member rows are fresh). Where it holds at least `cap` members,
    or every fresh row below the limit (it is not full), those are the answer; elsewhere the members are searched
    again (only for those test points, only among the members).
    """
    idx = hood.index
    ok = idx >= 0
    ok[ok] = member[idx[ok]]
    keep = ok & (np.cumsum(ok, axis=1) <= cap)
    t, c = np.nonzero(keep)  # row-major: by test point, then (distance, row)
    test, row, dist = t, idx[t, c], hood.dist[t, c]
    short = (idx[:, -1] >= 0) & (ok.sum(axis=1) < cap)
    if not short.any():
        return Pairs(test, row, dist)
    assert x_test is not None and xs is not None and limit is not None, "a search needs the rows"
    again = np.flatnonzero(short)
    rows = np.flatnonzero(member)
    near = nearest_k(x_test[again], xs[rows], cap, ids=rows, limit=limit[again])
    q, c2 = np.nonzero(near.index >= 0)
    drop = short[test]
    return Pairs.sorted_from(np.concatenate([test[~drop], again[q]]), np.concatenate([row[~drop], near.index[q, c2]]),
                             np.concatenate([dist[~drop], near.dist[q, c2]]))


def _originality(view: LakeView, xs: np.ndarray, judged: np.ndarray, pairs: Pairs, hood: Nearest,
                 ranks: int) -> Originality:
    """Each judged row's squared distance to its nearest earlier row, and how many test points lie as close.

    A judged row is compared with the earlier fresh rows within `ranks` places of it in the order (`hood`) of each
    test point where it could earn, and with the lake rows near those test points (see rewards.originality): its
    cost follows the game's pairs (pairs x 2 ranks), whatever the number of new rows. Looking at fewer rows can only
    make a row look more original. A test point's own nearest earlier row is in its order, unless the order is full
    and every row in it arrived later: then its farthest distance stands in (no farther than the truth, so p-values
    can only grow).
    """
    m = xs.shape[0]
    rows = np.flatnonzero(judged)
    nearest = np.full(rows.size, np.inf)
    width = hood.k
    if rows.size and ranks:
        # Earlier fresh rows near the row in the order of each test point where it could earn.
        place = np.arange(pairs.test.size) - np.searchsorted(pairs.test, pairs.test, side="left")  # its column
        step = np.r_[np.arange(-ranks, 0), np.arange(1, ranks + 1)]
        col = place[:, None] + step[None, :]
        inside = (col >= 0) & (col < width)
        other = np.where(inside, hood.index[pairs.test[:, None], np.clip(col, 0, width - 1)], -1).reshape(-1)
        who = np.repeat(pairs.row, step.size)
        ok = (other >= 0) & (other < who)
        key = np.sort(who[ok] * np.int64(m) + other[ok])
        key = key[np.r_[True, key[1:] != key[:-1]]] if key.size else key  # (np.unique would import numpy.ma)
        who, other = key // m, key % m
        if key.size:
            dist = canonical_pairs(xs, xs, who, other)
            at = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
            nearest[np.searchsorted(rows, who[at])] = np.minimum.reduceat(dist, at)
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
    # Every test point's window, and for a full one its farthest distance standing in for any row before them all.
    t, c = np.nonzero(hood.index >= 0)
    full = np.flatnonzero(hood.index[:, -1] >= 0) if width else np.zeros(0, dtype=np.int64)
    closer = reference_counts(view.nearest.dist[:, 0], np.concatenate([t, full]),
                              np.concatenate([hood.index[t, c], np.full(full.size, -1, dtype=np.int64)]),
                              np.concatenate([hood.dist[t, c], hood.dist[full, -1]]), rows, nearest, m)
    nearest_sq = np.full(m, np.nan)
    nearest_sq[rows] = nearest
    closer_all = np.full(m, -1, dtype=np.int64)
    closer_all[rows] = closer
    p = np.full(m, np.nan)
    p[rows] = p_values(closer, view.x_test.shape[0])
    return Originality(judged, nearest_sq, closer_all, p, int(view.x_test.shape[0]))
