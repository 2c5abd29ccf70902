"""The parts of paying for information, each against its definition: exact nearest rows, the lake-conditioned Shapley
values (by enumeration), the conformal originality p-values (their false-positive rate measured on data we did not
shape), the submission gate's null distribution, and what the rules cost honest data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewards.conditional import LakeTop, Pairs, conditional_shapley, lake_utility, merged_utility
from rewards.duplicates import row_hashes
from rewards.marginal import value_new_rows
from rewards.neighbours import canonical_matrix, nearest_earlier, nearest_k, pairs_within
from rewards.originality import GATE_P, _beta_binomial_tail, gate_levels, gate_p_value, reference_counts
from tests.conftest import shapley_by_enumeration

DATASETS = ("digits", "wine", "breast_cancer", "iris")
HONEST_TAX_MAX = 0.05  # the share of an honest submission's value the originality rule may take


def _split(name: str, seed: int, parts: int = 4):
    """A random quarter held out (task init's default), the rest in `parts` equal shards."""
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.data[order].astype(np.float64), data.target[order].astype(np.int64)
    n_test = len(y) // 4
    size = (len(y) - n_test) // parts
    shards = [(x[n_test + i * size:n_test + (i + 1) * size], y[n_test + i * size:n_test + (i + 1) * size])
              for i in range(parts)]
    return (x[:n_test], y[:n_test]), shards


# ------------------------------------------------------------------------------------------------ nearest rows


@pytest.mark.parametrize("seed", range(12))
def test_nearest_rows_are_exact_by_canonical_distance_then_index(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d, nq, nr, k = int(rng.integers(1, 6)), int(rng.integers(1, 25)), int(rng.integers(0, 150)), int(rng.integers(1, 8))
    grid = seed % 2 == 0  # many equal distances
    draw = (lambda n: rng.integers(-3, 3, (n, d)) * 0.37) if grid else (lambda n: rng.normal(size=(n, d)))
    xq, xr = draw(nq).astype(float), draw(nr).astype(float)
    dist = canonical_matrix(xq, xr)
    chunk = 8 * nq * int(rng.integers(1, 30))  # several chunks, folded into one result
    got = nearest_k(xq, xr, k, max_chunk_bytes=chunk)
    # The same when the reference rows come in two calls (a view extended by a later epoch).
    half = nr // 2
    stepped = nearest_k(xq, xr[half:], k, into=nearest_k(xq, xr[:half], k), offset=half)
    for i in range(nq):
        want = sorted(range(nr), key=lambda j: (dist[i, j], j))[:k]
        assert list(got.index[i]) == want + [-1] * (k - len(want))
        np.testing.assert_array_equal(got.dist[i, :len(want)], dist[i, want])
    np.testing.assert_array_equal(stepped.index, got.index)
    q, r, dd = pairs_within(xq, xr, np.full(nq, 2.0))
    assert sorted(zip(q.tolist(), r.tolist())) == sorted(zip(*np.nonzero(dist < 2.0)))
    np.testing.assert_array_equal(dd, dist[q, r])
    rows = np.arange(nr)
    eligible = rng.random(nr) < 0.7
    earlier = nearest_earlier(xr, rows, eligible)
    full = canonical_matrix(xr, xr)
    for i in range(nr):
        prev = [full[i, j] for j in range(i) if eligible[j]]
        assert earlier[i] == (min(prev) if prev else np.inf)


# ------------------------------------------------------------------------------------------------ the game


@pytest.mark.parametrize("seed", range(40))
def test_lake_conditioned_values_equal_enumeration(seed: int) -> None:
    """Shapley over every order of up to 5 new rows of U'(lake + S) - U'(lake), ties lake first, then arrival;
    lakes of 0 to 7 rows (fewer than k included). Tolerance 1e-12."""
    rng = np.random.default_rng(seed)
    k, n_lake, m, n_test = int(rng.integers(1, 5)), int(rng.integers(0, 8)), int(rng.integers(1, 6)), \
        int(rng.integers(1, 4))
    grid = seed % 2 == 0
    draw = (lambda n: rng.integers(-2, 3, (n, 2)).astype(float)) if grid else (lambda n: rng.normal(size=(n, 2)))
    xl, xn, xt = draw(n_lake), draw(m), draw(n_test)
    yl, yn, yt = rng.integers(0, 3, n_lake), rng.integers(0, 3, m), rng.integers(0, 3, n_test)
    chance = float(rng.random() * 0.5)
    dl = canonical_matrix(xt, xl) if n_lake else np.zeros((n_test, 0))
    dn = canonical_matrix(xt, xn)

    def utility(members) -> float:
        total = 0.0
        for t in range(n_test):
            rows = [(dl[t, i], 0, i, yl[i]) for i in range(n_lake)] + [(dn[t, j], 1, j, yn[j]) for j in members]
            total += sum(float(y == yt[t]) - chance for *_, y in sorted(rows)[:k]) / k
        return total / n_test

    shapley = shapley_by_enumeration(utility, m)
    near = nearest_k(xt, xl, k)
    labels = np.where(near.index >= 0, yl[np.maximum(near.index, 0)] if n_lake else -1, -1)
    lake = LakeTop(near.dist, (labels == yt[:, None]) & (near.index >= 0), near.index >= 0)
    t, j = np.nonzero(dn < near.dist[:, -1][:, None])
    pairs = Pairs.sorted_from(t, j, dn[t, j])
    got = conditional_shapley(lake, pairs, yn, yt, k, chance, m)
    np.testing.assert_allclose(got, shapley, rtol=0, atol=1e-12)
    assert lake_utility(lake, yt, k, chance) == pytest.approx(utility(()), abs=1e-12)
    assert merged_utility(lake, pairs, yn, yt, k, chance) == pytest.approx(utility(range(m)), abs=1e-12)


# ------------------------------------------------------------------------------------------------ originality


@pytest.mark.parametrize("seed", range(8))
def test_reference_counts_follow_the_definition(seed: int) -> None:
    """For row i: test points whose nearest row of (lake + earlier new rows) is at most as far as row i's."""
    rng = np.random.default_rng(seed)
    xl, xn, xt = rng.normal(size=(int(rng.integers(0, 20)), 2)), rng.normal(size=(15, 2)), rng.normal(size=(9, 2))
    k = 3
    near = nearest_k(xt, xl, k)
    t, j, dd = pairs_within(xt, xn, near.dist[:, -1])
    rows = np.arange(15)
    nearest = nearest_earlier(xn, rows, np.ones(15, dtype=bool))
    lake_nn = near.dist[:, 0]
    if len(xl):
        nearest = np.minimum(nearest, canonical_matrix(xn, xl).min(axis=1))
    got = reference_counts(lake_nn, t, j, dd, rows, nearest, 15)
    dn = canonical_matrix(xt, xn)
    for i in range(15):
        ref = np.minimum(lake_nn, dn[:, :i].min(axis=1) if i else np.inf)
        assert got[i] == int((ref <= nearest[i]).sum())


@pytest.mark.parametrize("name", DATASETS)
def test_honest_rows_fall_below_a_level_at_most_as_often_as_the_level_says(name: str) -> None:
    """The stated false-positive rate, measured: over 10 random splits, honest rows' p-values are at most alpha about
    an alpha share of the time or less (binomial slack of 3 standard errors)."""
    below = {0.05: [], 0.25: []}
    for seed in range(10):
        (xt, yt), shards = _split(name, seed)
        lake, new = shards[0], (np.concatenate([s[0] for s in shards[1:]]), np.concatenate([s[1] for s in shards[1:]]))
        got = value_new_rows(*lake, row_hashes(*lake), *new, row_hashes(*new), xt, yt)
        o = got.originality
        for alpha in below:
            below[alpha].extend(o.below(alpha)[o.judged].tolist())
    rates = {alpha: float(np.mean(v)) for alpha, v in below.items()}
    n = len(below[0.05])
    print(f"{name}: {n} honest rows tested; share below 5%: {rates[0.05]:.3f}, below 25%: {rates[0.25]:.3f}")
    for alpha, rate in rates.items():
        assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("name", DATASETS)
def test_honest_data_loses_at_most_five_percent_to_the_rule_and_is_never_zeroed(name: str) -> None:
    """Against the same game without the originality rules: per honest submission, the value its excluded rows had
    there, and the honest total with and without; 6 splits, lake empty (epoch 1) and a quarter of the data."""
    worst_sub, worst_total = 0.0, 0.0
    for seed in range(6):
        (xt, yt), shards = _split(name, seed)
        for lake in ((np.zeros((0, xt.shape[1])), np.zeros(0, dtype=np.int64)), shards[0]):
            new = shards[1:] if len(lake[1]) else shards
            x, y = np.concatenate([s[0] for s in new]), np.concatenate([s[1] for s in new])
            groups = np.repeat(np.arange(len(new)), [len(s[1]) for s in new])
            h_lake = row_hashes(*lake) if len(lake[1]) else np.zeros(0, dtype=np.uint64)
            got = value_new_rows(*lake, h_lake, x, y, row_hashes(x, y), xt, yt, groups=groups)
            assert (got.group_gate_p >= GATE_P).all(), got.group_gate_p
            without = got.values_without_originality
            excluded = got.unoriginal | got.gated
            for g in range(len(new)):
                own = groups == g
                base = np.maximum(without[own], 0).sum()
                if base > 0:
                    worst_sub = max(worst_sub, np.maximum(without[own & excluded], 0).sum() / base)
            base_total = np.maximum(without, 0).sum()
            if base_total > 0:
                worst_total = max(worst_total, 1 - np.maximum(got.values, 0).sum() / base_total)
    print(f"{name}: the rule took at most {worst_sub:.2%} of an honest submission's value, "
          f"{worst_total:.2%} of all honest value")
    assert worst_sub <= HONEST_TAX_MAX and worst_total <= HONEST_TAX_MAX


@pytest.mark.parametrize("name", ("digits", "wine", "breast_cancer"))
def test_a_jittered_or_interpolated_copy_of_the_lake_is_zeroed_as_a_whole(name: str) -> None:
    for seed in range(3):
        (xt, yt), shards = _split(name, seed)
        lake, fresh = shards[0], shards[1]
        rng = np.random.default_rng(seed)
        std = xt.std(axis=0)
        copies = [lake[0] + rng.normal(size=lake[0].shape) * std * s for s in (0.05, 0.2)]
        x = np.concatenate([fresh[0], *copies])
        y = np.concatenate([fresh[1], lake[1], lake[1]])
        groups = np.repeat([0, 1, 2], [len(fresh[1]), len(lake[1]), len(lake[1])])
        got = value_new_rows(*lake, row_hashes(*lake), x, y, row_hashes(x, y), xt, yt, groups=groups)
        print(f"{name} seed {seed}: gate p fresh {got.group_gate_p[0]:.2g}, copies {got.group_gate_p[1:]}")
        assert got.group_gate_p[0] >= GATE_P and (got.group_gate_p[1:] < GATE_P).all()
        assert (got.values[len(fresh[1]):] == 0).all()


# ------------------------------------------------------------------------------------------------ the gate


def test_the_beta_binomial_tail_matches_scipy() -> None:
    from scipy.stats import betabinom

    for n, a, b in ((1, 1, 1), (20, 1, 37), (85, 9, 134), (300, 4, 446)):
        for below in (0, 1, n // 3, n):
            want = math.fsum(betabinom.pmf(np.arange(below, n + 1), n, a, b).tolist())  # (sf loses tiny tails)
            assert _beta_binomial_tail(below, n, a, b) == pytest.approx(want, rel=1e-9, abs=1e-300)


def test_gate_levels_and_an_honest_looking_submission() -> None:
    assert gate_levels(37) == [1, 2, 4, 8, 9] and gate_levels(2) == [] and gate_levels(449) == [1, 2, 4, 8, 16, 32,
                                                                                                 64, 112]
    rng = np.random.default_rng(0)
    # Counts spread uniformly over 0..T, as an honest submission's are: far from the gate.
    assert gate_p_value(rng.integers(0, 450, 300), 449) > 0.01
    # Half its rows closer to the market's data than any test point: zeroed.
    assert gate_p_value(np.r_[np.zeros(150, dtype=int), rng.integers(0, 450, 150)], 449) < GATE_P


def test_the_gate_fires_on_an_honest_submission_about_as_rarely_as_it_says() -> None:
    """Under the null (every row's rank uniform among T + 1 given one shared test sample), simulated: the gate's
    p-value is at most q about a q share of the time or less, for q = 1% and 10%."""
    rng = np.random.default_rng(1)
    t, n, runs = 60, 40, 3000
    ps = []
    for _ in range(runs):
        sample = np.sort(rng.random(t))
        rows = rng.random(n)
        closer = np.searchsorted(sample, rows)  # test points at least as close
        ps.append(gate_p_value(closer, t))
    ps = np.array(ps)
    for q in (0.01, 0.1):
        assert (ps <= q).mean() <= q + 3 * math.sqrt(q / runs)
