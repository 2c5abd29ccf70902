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

    A test point's nearest row of P_i is its nearest lake row or an earlier new row closer than that; any such new
    row is closer than its k-th lake row too, so the candidate pairs (h, j, distance) hold every one of them. Only
    test points with such a pair need more than their lake distance, and only at the columns where a pair or a
    judged row sits: the work follows those pairs, not T x (new rows).
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
    tests, t_of = np.unique(pt, return_inverse=True)
    # Columns: after each useful pair's row (it counts for later rows only) and at each judged row.
    cols = np.sort(np.concatenate([pr + 1, judged_rows]))
    cols = cols[np.r_[True, cols[1:] != cols[:-1]]]  # unique (np.unique would import numpy.ma)
    earlier = np.full((tests.size, cols.size), np.inf)
    np.minimum.at(earlier, (t_of.reshape(-1), np.searchsorted(cols, pr + 1)), pd)
    np.minimum.accumulate(earlier, axis=1, out=earlier)
    at = earlier[:, np.searchsorted(cols, judged_rows)]  # min over pairs with row < i
    lake = lake_nearest_sq[tests][:, None]
    # Those not already counted by their lake row, brought at least as close by an earlier new row.
    counts += ((lake > nearest_sq[None, :]) & (at <= nearest_sq[None, :])).sum(axis=0)
    return counts


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

    logs = [log_pmf(x) for x in range(below, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
