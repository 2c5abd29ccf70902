"""Originality: does a new row lie closer to what the market held than an honest fresh draw would?

The test sample's own rows are honest fresh draws, so their distance to the nearest row the market held is exactly
what a genuinely new row's distance looks like. For new row i, with P_i = the lake plus every earlier new row that is
not a duplicate (ingest's arrival order; the sender's own earlier rows included), its score is s_i = the distance to
its nearest row of P_i, and its reference is each test point's distance to its nearest row of the same P_i. The
conformal p-value p_i = (1 + #{test points at least as close to P_i}) / (T + 1) is uniform (or larger) for a row
exchangeable with the test sample, so an honest row has p_i <= alpha with probability at most alpha, whatever the
data: that is the rule's false-positive rate, by construction.

Two rules use it:
- a row with p_i <= ROW_ALPHA is *unoriginal*: it earns nothing and stays out of the valuation game;
- a submission whose rows lie this close far more often than honest rows can (at any of a few levels up to
  GATE_ALPHA; the count at each level is Beta-Binomial for honest rows, since they share one test sample; the levels
  are combined by Bonferroni) is unoriginal as a whole if that is less likely than GATE_P: copies and synthetic rows
  come in bulk, and a whole submission's distances are a far stronger test than one row's. An honest submission is
  zeroed with probability at most GATE_P.

Only rows that could earn are judged: a row no test point holds among its k nearest is worth 0 in any case. Their
nearest lake row is sought among the ORIGINALITY_NEIGHBOURS lake rows nearest to each test point where the row could
earn (kept between epochs), not the whole lake: in high dimensions a jittered copy is farther from every fixed point
than its original, so a copy that could earn at a test point has its original among that point's nearest rows. Looking
at fewer lake rows can only make a row look more original, never less, so the false-positive rate above still holds.
Earlier new rows are sought the same way (rewards.marginal): within 2k places of the row in the order of each test
point where it could earn (a copy lies next to its source in distance to any point). A test point's own distance to
P_i is exact, or, where its kept nearest new rows all arrived after row i, the farthest of them stands in: no farther
than the truth, so a test point is only ever counted more often, and p-values can only grow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROW_ALPHA = 0.01
"""Per-row level: an honest row is flagged unoriginal with probability at most this (test samples of >= 99 rows; smaller ones flag no single row)."""
GATE_ALPHA = 0.25
"""Per-row level counted by the submission gate (a quartile: copies and synthetic rows fall below it in bulk)."""
GATE_P = 1e-6
"""Submission level: an honest submission is zeroed as a whole with probability at most this."""
ORIGINALITY_NEIGHBOURS = 32
"""Lake rows kept per test point for originality (at least k)."""


@dataclass(frozen=True)
class Originality:
    """Per new row: judged (it could earn), squared distance to its nearest earlier row, reference count, p-value."""

    judged: np.ndarray  # bool
    nearest_sq: np.ndarray  # float64, nan where not judged
    closer: np.ndarray  # int64: test points at least as close to the same earlier rows (-1 where not judged)
    p_value: np.ndarray  # float64, nan where not judged
    n_test: int

    def below(self, alpha: float) -> np.ndarray:
        """Rows whose p-value is at most alpha (never a row that was not judged), decided in integers."""
        return self.judged & (self.closer >= 0) & (self.closer < flag_rank(alpha, self.n_test))


def reference_counts(lake_nearest_sq: np.ndarray, pair_test: np.ndarray, pair_row: np.ndarray,
                     pair_dist: np.ndarray, judged_rows: np.ndarray, nearest_sq: np.ndarray, n_new: int) -> np.ndarray:
    """Per judged row i: the number of test points h whose nearest row of P_i is at most as far as row i's.

    A test point's nearest row of P_i is its nearest lake row or an earlier new row closer than that; the candidate
    pairs (h, j, distance) must hold every such row (or a row that stands for them no farther away: j = -1 counts for
    every row i; a nearer stand-in only counts more test points, so p-values can only grow). Per test point only
    its *record* pairs matter (by row, each closer than every earlier one): record r (row j_r, distance d_r) decides
    for exactly the rows i > j_r and the scores s in [d_r, min(d_{r-1}, lake)), one box per record, so a row's count
    is the number of boxes that hold it plus the test points its lake row already brings that close: two dominance
    counts, O((pairs + rows) log pairs), never a test-points x rows table.
    """
    counts = np.zeros(judged_rows.size, dtype=np.int64)
    if judged_rows.size == 0:
        return counts
    # Test points at least as close through their lake row alone.
    counts += np.searchsorted(np.sort(lake_nearest_sq), nearest_sq, side="right")
    useful = pair_dist < lake_nearest_sq[pair_test]
    pt, pr, pd = pair_test[useful], pair_row[useful], pair_dist[useful]
    if pt.size == 0:
        return counts
    # Records per test point: by (test, row, distance), a pair closer than every earlier pair of its test point.
    order = np.lexsort((pd, pr, pt))
    pt, pr, pd = pt[order], pr[order], pd[order]
    values = np.sort(pd)
    rank = np.searchsorted(values, pd).astype(np.int64)  # distance ranks (ties equal)
    # A running minimum that restarts per test point: the test point, descending, leads the key, so every earlier
    # test point's keys are larger and a test point's first pair is always a record.
    key = (np.int64(pt.max()) - pt) * np.int64(pd.size + 1) + rank
    record = np.r_[True, key[1:] < np.minimum.accumulate(key)[:-1]]
    rt, rj, lo = pt[record], pr[record], pd[record]
    first = np.r_[True, rt[1:] != rt[:-1]]
    hi = np.minimum(np.where(first, np.inf, np.r_[np.inf, lo[:-1]]), lake_nearest_sq[rt])
    counts += _dominance(rj, lo, judged_rows, nearest_sq) - _dominance(rj, hi, judged_rows, nearest_sq)
    return counts


def _dominance(key: np.ndarray, val: np.ndarray, q_key: np.ndarray, q_val: np.ndarray) -> np.ndarray:
    """Per query n: #{b : key[b] < q_key[n] and val[b] <= q_val[n]}, by a merge-sort tree over key order."""
    out = np.zeros(q_key.size, dtype=np.int64)
    nb = key.size
    if nb == 0 or q_key.size == 0:
        return out
    order = np.argsort(key, kind="stable")
    key, val = key[order], val[order]
    upto = np.searchsorted(key, q_key, side="left").astype(np.int64)  # the boxes with key < q_key: a prefix
    values = np.sort(val)
    rank = np.searchsorted(values, val, side="left").astype(np.int64)  # val <= v  <=>  rank < #(values <= v)
    q_rank = np.searchsorted(values, q_val, side="right").astype(np.int64)
    base = np.int64(nb + 1)
    pos = np.arange(nb, dtype=np.int64)
    # The prefix [0, n) is the union over the set bits L of n of the level-L block (n >> L) - 1 (2^L rows, full).
    for level in range(int(nb).bit_length()):
        take = ((upto >> level) & 1).astype(bool)
        if not take.any():
            continue
        block = (upto[take] >> level) - 1
        sorted_key = np.sort((pos >> level) * base + rank)
        out[take] += np.searchsorted(sorted_key, block * base + q_rank[take], side="left") - (block << level)
    return out


def p_values(closer: np.ndarray, n_test: int) -> np.ndarray:
    """Conformal p-values: (1 + test points at least as close) / (T + 1)."""
    return (1.0 + closer) / (n_test + 1.0)


def flag_rank(alpha: float, n_test: int) -> int:
    """l = floor(alpha (T + 1)): p <= alpha exactly when fewer than l test points are as close; 0: the rule is off."""
    return int(math.floor(alpha * (n_test + 1) + 1e-9))


def gate_levels(n_test: int, alpha: float = GATE_ALPHA) -> list[int]:
    """The ranks l the gate counts at: 1, 2, 4, ... up to floor(alpha (T + 1)) (and that one). Copies pile up at the
    smallest ranks (closer than every test point), interpolations a little higher: several levels see both."""
    top = flag_rank(alpha, n_test)
    levels = {2**i for i in range(top.bit_length()) if 2**i <= top}
    return sorted(levels | ({top} if top else set()))


def gate_p_value(closer: np.ndarray, n_test: int, alpha: float = GATE_ALPHA) -> float:
    """How unlikely an honest submission is to have this many rows this close: Bonferroni over `gate_levels`.

    `closer` holds the submission's tested rows' counts of test points at least as close (see reference_counts).
    At level l, an honest row has fewer than l such test points with probability F ~ Beta(l, T + 1 - l) given the
    test sample (the l-th of T + 1 exchangeable uniforms), the same F for every row of the submission: the number
    below is Beta-Binomial(n, l, T + 1 - l). The smallest tail probability over the levels, times their number.
    """
    closer = np.asarray(closer).reshape(-1)
    levels = gate_levels(n_test, alpha)
    if not levels or closer.size == 0:
        return 1.0
    tails = [_beta_binomial_tail(int((closer < l).sum()), closer.size, l, n_test + 1 - l) for l in levels]
    return min(1.0, min(tails) * len(levels))


def _beta_binomial_tail(below: int, n: int, a: float, b: float) -> float:
    """P(X >= below) for X ~ Beta-Binomial(n, a, b), summed in log space."""
    if below <= 0:
        return 1.0

    def log_pmf(x: int) -> float:
        return (math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
                + _log_beta(x + a, n - x + b) - _log_beta(a, b))

    # The first term exactly, the rest by the ratio pmf(x + 1) / pmf(x) = (n - x)(x + a) / ((x + 1)(n - x - 1 + b)).
    x = np.arange(below, n, dtype=np.float64)
    steps = np.log((n - x) * (x + a)) - np.log((x + 1.0) * (n - x - 1.0 + b))
    logs = log_pmf(below) + np.r_[0.0, np.cumsum(steps)]
    top = float(logs.max())
    return min(1.0, math.exp(top) * math.fsum(np.exp(logs - top).tolist()))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
