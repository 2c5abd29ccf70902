"""The first epoch (an empty lake): the game weighs at most R new rows per test point (rewards.marginal.new_rows_cap),
so its cost is bounded, and it is still an exact Shapley game whose values add up to what the played rows added.

Before the cap, an empty lake (or one of fewer than k rows near a test point) gave every test point an infinite
radius: every (test point, new row) pair was weighed and originality searched every earlier row, so 300,000 new rows
against 2,000 test rows ran out of memory. Each property is checked against its definition: brute-force KNN utilities,
enumeration over every order of the players, and scikit-learn data with random splits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rewards.marginal as marginal
import rewards.neighbours as neighbours
from rewards.duplicates import row_hashes
from rewards.marginal import chance_term, new_rows_cap, value_new_rows
from rewards.neighbours import canonical_matrix, nearest_k
from rewards.originality import GATE_P, _dominance, reference_counts
from tests.conftest import shapley_by_enumeration


def _empty(d: int):
    return np.zeros((0, d)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64)


def _blobs(rng: np.random.Generator, n: int, d: int, means: np.ndarray):
    y = rng.integers(0, len(means), n)
    return means[y] + rng.normal(size=(n, d)), y


def _utility(xl, yl, xs, ys, xt, yt, k: int, chance: float) -> float:
    """U'(rows) by brute force: per test point the k nearest of lake + given rows by (canonical distance, lake
    first, arrival), each adding (1[label matches] - chance) / k; the mean over test points."""
    dl = canonical_matrix(xt, xl) if len(xl) else np.zeros((len(xt), 0))
    dn = canonical_matrix(xt, xs) if len(xs) else np.zeros((len(xt), 0))
    total = 0.0
    for t in range(len(xt)):
        rows = [(dl[t, i], 0, i, yl[i]) for i in range(len(xl))] + [(dn[t, j], 1, j, ys[j]) for j in range(len(xs))]
        total += sum(float(y == yt[t]) - chance for *_, y in sorted(rows)[:k]) / k
    return total / len(xt)


# ------------------------------------------------------------------------------------------------ bounded cost


def test_an_empty_lake_weighs_at_most_r_new_rows_per_test_point(monkeypatch) -> None:
    """The defect: 50,000 new rows, an empty lake, 500 test rows. Every game (the played rows' and the judged rows')
    holds at most R pairs per test point, T x R in all, and every test point holds exactly R (the cap binds)."""
    rng = np.random.default_rng(0)
    means = rng.normal(scale=1.5, size=(10, 32))
    xt, yt = _blobs(rng, 500, 32, means)
    xn, yn = _blobs(rng, 50_000, 32, means)
    cap = new_rows_cap(5, len(yt))
    assert 5 <= cap < 50_000
    seen = []
    real = marginal.conditional_shapley

    def spy(lake, pairs, *args):
        seen.append(np.bincount(pairs.test, minlength=len(yt)))
        return real(lake, pairs, *args)

    monkeypatch.setattr(marginal, "conditional_shapley", spy)
    got = value_new_rows(*_empty(32), xn, yn, row_hashes(xn, yn), xt, yt, groups=np.arange(50_000) // 5_000)
    assert len(seen) == 2
    for per_test in seen:
        assert per_test.max() <= cap and per_test.sum() <= len(yt) * cap
    assert (seen[1] == cap).all()  # the judged rows' game: the cap binds at every test point
    assert got.originality.judged.sum() <= len(yt) * cap
    assert got.values.sum() == pytest.approx(got.gain, rel=1e-9, abs=1e-15) and got.gain > 0
    assert (got.group_gate_p >= GATE_P).all()


_MEMORY_PROBE = textwrap.dedent("""
    import json, time
    import numpy as np
    from rewards.duplicates import row_hashes
    from rewards.marginal import value_new_rows
    rng = np.random.default_rng(0)
    means = rng.normal(scale=1.5, size=(10, 32))
    def draw(n):
        y = rng.integers(0, 10, n)
        return means[y] + rng.normal(size=(n, 32)), y
    def high_water_kib():
        # VmHWM is this address space's own peak; ru_maxrss also keeps the parent's peak across fork/vfork + exec.
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    xt, yt = draw(500)
    xn, yn = draw(50000)
    before = high_water_kib()
    start = time.perf_counter()
    got = value_new_rows(np.zeros((0, 32)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint64), xn, yn,
                         row_hashes(xn, yn), xt, yt, groups=np.arange(50000) // 5000)
    print(json.dumps({"before_kib": before, "peak_kib": high_water_kib(), "seconds": time.perf_counter() - start,
                      "sums": bool(abs(got.values.sum() - got.gain) <= 1e-9 * abs(got.gain))}))
""")


@pytest.mark.process
def test_a_first_epoch_of_50000_rows_stays_under_768_mib() -> None:
    """Measured with the cap: 0.24 GiB, under a second. Before it, this epoch weighed all 25M pairs and compared every
    judged row with every earlier one: 4.8 GB and 163 s on two cores."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], cwd=root, capture_output=True, text=True,
                         check=True, timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["sums"]
    assert report["peak_kib"] < 768 * 2**10, f"peak RSS {report['peak_kib'] / 2**20:.2f} GiB"


# ------------------------------------------------------------------------------------------------ the capped game


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_lake", [0, 2])
def test_with_the_cap_binding_the_values_add_up_to_what_the_played_rows_added(monkeypatch, seed: int,
                                                                              n_lake: int) -> None:
    """300 new rows, 40 test rows, k = 3, R = 12 (the pair budget off): sum(values) = gain to 1e-9, and the gain is
    U'(lake + played rows) - U'(lake) by brute force. With originality on, a copier's gated rows leave holes in the
    test points' nearest rows, so the played rows' game is searched again where a test point holds fewer than R."""
    monkeypatch.setattr(marginal, "PAIR_BUDGET", 0)
    rng = np.random.default_rng(seed)
    d, k = 4, 3
    means = rng.normal(scale=1.5, size=(3, d))
    xt, yt = _blobs(rng, 40, d, means)
    xl, yl = _blobs(rng, n_lake, d, means)
    honest = _blobs(rng, 200, d, means)
    copies = (honest[0][:100] + rng.normal(size=(100, d)) * 0.02, honest[1][:100])
    xn, yn = np.concatenate([honest[0], copies[0]]), np.concatenate([honest[1], copies[1]])
    groups = np.repeat([0, 1], [200, 100])
    cap = new_rows_cap(k, len(yt))
    assert cap == 12 < len(yn)
    chance = chance_term(yt)
    before = _utility(xl, yl, xn[:0], yn[:0], xt, yt, k, chance)
    for originality in (False, True):
        got = value_new_rows(xl, yl, row_hashes(xl, yl) if n_lake else np.zeros(0, np.uint64), xn, yn,
                             row_hashes(xn, yn), xt, yt, k=k, scaling="none", groups=groups, originality=originality)
        if originality:
            played = got.fresh & got.originality.judged & ~got.unoriginal & ~got.gated
            assert got.gated[200:].all() and not got.gated[:200].any()
        else:
            played = got.fresh  # every row: one no test point holds is in no test point's k nearest either
        assert (got.values[~played] == 0).all()
        after = _utility(xl, yl, xn[played], yn[played], xt, yt, k, chance)
        assert got.lake_utility == pytest.approx(before, abs=1e-12)
        assert got.gain == pytest.approx(after - before, rel=1e-9, abs=1e-12)
        assert got.values.sum() == pytest.approx(got.gain, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_the_capped_game_is_exact_shapley_by_enumeration(monkeypatch, seed: int) -> None:
    """Shapley over every order of 7 new rows of v(S) = sum_t U'_t((lake + S) within C_t) / T, C_t = the lake and
    the R = 4 nearest new rows below the lake's k-th distance (k = 1; lakes of 0 to 2 rows); tolerance 1e-12."""
    monkeypatch.setattr(marginal, "PAIR_BUDGET", 0)
    rng = np.random.default_rng(seed)
    k, m, n_test, n_lake = 1, 7, 3, seed % 3
    grid = seed % 2 == 0  # integer features: equal distances
    draw = (lambda n: rng.integers(-2, 3, (n, 2)).astype(float)) if grid else (lambda n: rng.normal(size=(n, 2)))
    xl, xn, xt = draw(n_lake), draw(m), draw(n_test)
    xn += np.arange(m)[:, None] * 1e-3  # distinct rows: no duplicate leaves the game
    yl, yn, yt = rng.integers(0, 3, n_lake), rng.integers(0, 3, m), rng.integers(0, 3, n_test)
    cap = new_rows_cap(k, n_test)
    assert cap == 4 < m
    chance = chance_term(yt)
    dl = canonical_matrix(xt, xl) if n_lake else np.zeros((n_test, 0))
    dn = canonical_matrix(xt, xn)
    kth = [sorted(dl[t])[k - 1] if n_lake >= k else np.inf for t in range(n_test)]
    weighed = [sorted((dn[t, j], j) for j in range(m) if dn[t, j] < kth[t])[:cap] for t in range(n_test)]
    weighed = [{j for _, j in w} for w in weighed]

    def utility(members) -> float:
        total = 0.0
        for t in range(n_test):
            rows = [(dl[t, i], 0, i, yl[i]) for i in range(n_lake)]
            rows += [(dn[t, j], 1, j, yn[j]) for j in members if j in weighed[t]]
            total += sum(float(y == yt[t]) - chance for *_, y in sorted(rows)[:k]) / k
        return total / n_test

    shapley = shapley_by_enumeration(utility, m)
    got = value_new_rows(xl, yl, row_hashes(xl, yl), xn, yn, row_hashes(xn, yn), xt, yt, k=k, scaling="none",
                         originality=False)
    np.testing.assert_allclose(got.values, shapley, rtol=0, atol=1e-12)
    # R >= k: the capped game's grand coalition is worth exactly what all the rows add to the lake.
    assert got.gain == pytest.approx(_utility(xl, yl, xn, yn, xt, yt, k, chance) - utility(()), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_the_cap_changes_nothing_where_it_does_not_bind(monkeypatch, seed: int) -> None:
    """m <= R: with R = 4k = 8 (the pair budget off) the values are the uncapped game's, by enumeration over every
    order of 6 rows, and equal bit for bit to those under the default budget."""
    rng = np.random.default_rng(seed)
    k, m = 2, 6
    xl, xn, xt = rng.normal(size=(seed, 2)), rng.normal(size=(m, 2)), rng.normal(size=(4, 2))
    yl, yn, yt = rng.integers(0, 3, seed), rng.integers(0, 3, m), rng.integers(0, 3, 4)
    chance = chance_term(yt)

    def utility(members) -> float:
        members = list(members)
        return _utility(xl, yl, xn[members], yn[members], xt, yt, k, chance)

    shapley = shapley_by_enumeration(utility, m)
    args = (xl, yl, row_hashes(xl, yl), xn, yn, row_hashes(xn, yn), xt, yt)
    default = value_new_rows(*args, k=k, scaling="none", originality=False).values
    monkeypatch.setattr(marginal, "PAIR_BUDGET", 0)
    assert new_rows_cap(k, 4) == 8 >= m
    capped = value_new_rows(*args, k=k, scaling="none", originality=False).values
    np.testing.assert_allclose(capped, shapley, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(capped, default)


def test_a_lake_whose_radius_holds_fewer_than_r_new_rows_is_valued_as_before(monkeypatch) -> None:
    """digits: three quarters of the rows in the lake, the rest new. Every test point's lake k-th radius holds fewer
    than R = 4k new rows, so the cap at 4k (the pair budget off) changes no value and no originality figure."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    x, y = data.data[order].astype(np.float64), data.target[order].astype(np.int64)
    xt, yt, xl, yl, xn, yn = x[:400], y[:400], x[400:1400], y[400:1400], x[1400:], y[1400:]
    args = (xl, yl, row_hashes(xl, yl), xn, yn, row_hashes(xn, yn), xt, yt)
    default = value_new_rows(*args)
    monkeypatch.setattr(marginal, "PAIR_BUDGET", 0)
    capped = value_new_rows(*args)
    # The precondition, from the distances on the valuation's scaling.
    from rewards.scaling import fit_scaling

    s = fit_scaling(xt, "standard")
    kth = np.sort(canonical_matrix(s.apply(xt), s.apply(xl)), axis=1)[:, 4]
    within = (canonical_matrix(s.apply(xt), s.apply(xn)) < kth[:, None]).sum(axis=1)
    assert within.max() < new_rows_cap(5, len(yt)) == 20
    np.testing.assert_array_equal(capped.values, default.values)
    np.testing.assert_array_equal(capped.originality.judged, default.originality.judged)
    assert capped.gain == default.gain


# ------------------------------------------------------------------------------------------------ first epoch, real data


def _shards(name: str, seed: int):
    from sklearn import datasets

    data = getattr(datasets, f"load_{name}")()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.data[order].astype(np.float64), data.target[order].astype(np.int64)
    n_test = len(y) // 4
    half = (len(y) - n_test) // 2
    return (x[:n_test], y[:n_test]), (x[n_test:n_test + half], y[n_test:n_test + half]), \
        (x[n_test + half:n_test + 2 * half], y[n_test + half:n_test + 2 * half])


@pytest.mark.parametrize("budget", [marginal.PAIR_BUDGET, 0])
@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_first_epoch_pays_honest_rows_and_nothing_for_a_jittered_copy_of_another_contributor(
        monkeypatch, name: str, budget: int) -> None:
    """An empty lake; two honest contributors, then a third who re-sends the first one's rows with jitter (5% and
    20% of each feature's spread). The honest rows earn a positive total and the copy is zeroed as a whole, with the
    default budget (the cap does not bind on these samples) and with R = 4k (it binds)."""
    monkeypatch.setattr(marginal, "PAIR_BUDGET", budget)
    for seed in range(3):
        (xt, yt), a, b = _shards(name, seed)
        rng = np.random.default_rng(seed)
        std = xt.std(axis=0)
        for jitter in (0.05, 0.2):
            copy = a[0] + rng.normal(size=a[0].shape) * std * jitter
            x, y = np.concatenate([a[0], b[0], copy]), np.concatenate([a[1], b[1], a[1]])
            groups = np.repeat([0, 1, 2], [len(a[1]), len(b[1]), len(a[1])])
            got = value_new_rows(*_empty(x.shape[1]), x, y, row_hashes(x, y), xt, yt, groups=groups)
            per = [got.values[groups == g].sum() for g in range(3)]
            print(f"{name} seed {seed} jitter {jitter} R {new_rows_cap(5, len(yt))}: honest {per[0]:.4f} "
                  f"{per[1]:.4f}, copy {per[2]:.4f}, gate p {got.group_gate_p}")
            assert per[0] > 0 and per[1] > 0
            assert (got.group_gate_p[:2] >= GATE_P).all() and got.group_gate_p[2] < GATE_P
            assert (got.values[groups == 2] == 0).all()
            assert got.values.sum() == pytest.approx(got.gain, rel=1e-9, abs=1e-15)


# ------------------------------------------------------------------------------------------------ the parts


@pytest.mark.parametrize("seed", range(10))
def test_reference_counts_with_stand_ins_follow_the_definition(seed: int) -> None:
    """Per row i: test points h with min(lake_h, min over pairs (h, j, d) with j < i of d) <= s_i; pairs with j = -1
    count for every row. Equal distances included (a grid)."""
    rng = np.random.default_rng(seed)
    n_test, m = int(rng.integers(1, 12)), int(rng.integers(1, 40))
    lake = np.where(rng.random(n_test) < 0.3, np.inf, rng.integers(0, 8, n_test).astype(float))
    n_pairs = int(rng.integers(0, 80))
    pt = rng.integers(0, n_test, n_pairs)
    pr = rng.integers(-1, m, n_pairs)
    pd = rng.integers(0, 8, n_pairs).astype(float)
    rows = np.flatnonzero(rng.random(m) < 0.6)
    s = np.where(rng.random(rows.size) < 0.1, np.inf, rng.integers(0, 9, rows.size).astype(float))
    got = reference_counts(lake, pt, pr, pd, rows, s, m)
    for n, i in enumerate(rows):
        ref = [min([lake[h]] + [pd[p] for p in range(n_pairs) if pt[p] == h and pr[p] < i]) for h in range(n_test)]
        assert got[n] == sum(r <= s[n] for r in ref)


@pytest.mark.parametrize("seed", range(6))
def test_dominance_counts_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nb, nq = int(rng.integers(0, 300)), int(rng.integers(0, 50))
    key, val = rng.integers(0, 20, nb), rng.integers(0, 10, nb).astype(float)
    qk, qv = rng.integers(0, 21, nq), rng.integers(-1, 11, nq).astype(float)
    want = [int(((key < a) & (val <= b)).sum()) for a, b in zip(qk, qv)]
    assert _dominance(key, val, qk, qv).tolist() == want


@pytest.mark.parametrize("seed", range(6))
def test_nearest_rows_with_a_limit_and_a_wide_k_are_exact(monkeypatch, seed: int) -> None:
    """nearest_k with `limit` keeps the k nearest of the rows below it, by (canonical distance, index); the same
    whichever merge runs (counting for a narrow k, sorting for a wide one)."""
    rng = np.random.default_rng(seed)
    nq, nr, d = int(rng.integers(1, 20)), int(rng.integers(0, 400)), 3
    xq, xr = rng.integers(-3, 3, (nq, d)) * 0.5, rng.integers(-3, 3, (nr, d)) * 0.5
    dist = canonical_matrix(xq, xr)
    limit = rng.integers(1, 12, nq).astype(float)
    for k in (3, 40):
        results = []
        for widest in (neighbours._COUNTING_MERGE_MAX_K, 0):  # 0: every merge sorts
            monkeypatch.setattr(neighbours, "_COUNTING_MERGE_MAX_K", widest)
            results.append(nearest_k(xq, xr, k, limit=limit, max_chunk_bytes=8 * nq * 16))
        for got in results:
            for i in range(nq):
                want = sorted((dist[i, j], j) for j in range(nr) if dist[i, j] < limit[i])[:k]
                assert got.index[i].tolist() == [j for _, j in want] + [-1] * (k - len(want))
                np.testing.assert_array_equal(got.dist[i, :len(want)], [v for v, _ in want])
