"""KNN-Shapley: exact against brute-force permutations, efficient, order-invariant, chunk- and backend-independent."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rewards import valuation
from rewards.backend import get_xp, gpu_available, to_numpy
from rewards.valuation import MAX_VALUATION_BYTES, knn_shapley, knn_utility


def brute_utility(x_train: np.ndarray, y_train: Sequence, x_test: np.ndarray, y_test: Sequence, k: int,
                  subset: frozenset[int]) -> float:
    """U(S): mean over test points of label matches among the min(k, |S|) nearest of S (ties by index), over k."""
    if not subset:
        return 0.0
    total = 0.0
    for t, yt in zip(x_test, y_test):
        ranked = sorted((float(((x_train[i] - t) ** 2).sum()), i) for i in subset)
        total += sum(y_train[i] == yt for _, i in ranked[: min(k, len(subset))]) / k
    return total / len(x_test)


def brute_shapley(x_train: np.ndarray, y_train: Sequence, x_test: np.ndarray, y_test: Sequence, k: int) -> np.ndarray:
    """Shapley values by averaging marginal contributions over every permutation of the training rows."""
    n = len(x_train)
    cache: dict[frozenset[int], float] = {}

    def utility(subset: frozenset[int]) -> float:
        if subset not in cache:
            cache[subset] = brute_utility(x_train, y_train, x_test, y_test, k, subset)
        return cache[subset]

    values = np.zeros(n)
    for perm in itertools.permutations(range(n)):
        before: frozenset[int] = frozenset()
        for i in perm:
            after = before | {i}
            values[i] += utility(after) - utility(before)
            before = after
    return values / math.factorial(n)


def random_task(rng: np.random.Generator, n: int, n_test: int, d: int = 3, classes: int = 3,
                grid: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random features (integers on a small grid when `grid` is set, which makes distance ties likely) and labels."""
    if grid is None:
        x_train, x_test = rng.normal(size=(n, d)), rng.normal(size=(n_test, d))
    else:
        x_train = rng.integers(0, grid, size=(n, d)).astype(np.float64)
        x_test = rng.integers(0, grid, size=(n_test, d)).astype(np.float64)
    return x_train, rng.integers(0, classes, n), x_test, rng.integers(0, classes, n_test)


@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_shapley_on_tiny_sets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 7))
    # Half the cases on a 0..2 grid in 2-D, so rows tie in distance and duplicate each other.
    grid = 3 if seed % 2 else None
    x_train, y_train, x_test, y_test = random_task(rng, n, int(rng.integers(1, 4)), d=2, classes=2, grid=grid)
    for k in (1, 2, 3, 5, 7):
        expected = brute_shapley(x_train, y_train, x_test, y_test, k)
        np.testing.assert_allclose(knn_shapley(x_train, y_train, x_test, y_test, k, xp=np), expected,
                                   rtol=0, atol=1e-12)
        assert knn_utility(x_train, y_train, x_test, y_test, k, xp=np) == pytest.approx(
            brute_utility(x_train, y_train, x_test, y_test, k, frozenset(range(n))), abs=1e-15)


def test_ties_go_to_the_lower_training_index() -> None:
    # Two copies of one point with different labels: with k = 1 the lower index is the nearest whenever both are in.
    values = knn_shapley(np.zeros((2, 1)), np.array([1, 0]), np.zeros((1, 1)), np.array([1]), k=1, xp=np)
    np.testing.assert_array_equal(values, [1.0, 0.0])
    swapped = knn_shapley(np.zeros((2, 1)), np.array([0, 1]), np.zeros((1, 1)), np.array([1]), k=1, xp=np)
    np.testing.assert_array_equal(swapped, [-0.5, 0.5])


@pytest.mark.parametrize(("seed", "k"), [(0, 1), (1, 5), (2, 10), (3, 40), (4, 3)])
def test_efficiency_values_sum_to_full_utility(seed: int, k: int) -> None:
    rng = np.random.default_rng(100 + seed)
    x_train, y_train, x_test, y_test = random_task(rng, 300, 37, d=4, classes=4, grid=4 if seed % 2 else None)
    values = knn_shapley(x_train, y_train, x_test, y_test, k, xp=np)
    assert values.dtype == np.float64 and values.shape == (300,)
    full = knn_utility(x_train, y_train, x_test, y_test, k, xp=np)
    assert values.sum() == pytest.approx(full - 0.0, abs=1e-10)


def test_fewer_rows_than_k_is_still_efficient() -> None:
    rng = np.random.default_rng(7)
    x_train, y_train, x_test, y_test = random_task(rng, 4, 9)
    values = knn_shapley(x_train, y_train, x_test, y_test, k=10, xp=np)
    assert values.sum() == pytest.approx(knn_utility(x_train, y_train, x_test, y_test, k=10, xp=np), abs=1e-12)


def test_permuting_training_rows_permutes_values() -> None:
    rng = np.random.default_rng(11)
    x_train, y_train, x_test, y_test = random_task(rng, 200, 25)  # continuous features: no ties to reorder
    values = knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np)
    perm = rng.permutation(200)
    permuted = knn_shapley(x_train[perm], y_train[perm], x_test, y_test, k=5, xp=np)
    np.testing.assert_allclose(permuted, values[perm], rtol=0, atol=1e-12)


def test_permuting_test_points_changes_nothing() -> None:
    rng = np.random.default_rng(12)
    x_train, y_train, x_test, y_test = random_task(rng, 150, 40, grid=5)
    perm = rng.permutation(40)
    np.testing.assert_allclose(knn_shapley(x_train, y_train, x_test[perm], y_test[perm], xp=np),
                               knn_shapley(x_train, y_train, x_test, y_test, xp=np), rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_bytes", [1, 48 * 120 * 2, 48 * 120 * 5, 48 * 120 * 8 + 7])
def test_chunking_gives_the_same_values_as_one_chunk(max_bytes: int) -> None:
    rng = np.random.default_rng(21)
    x_train, y_train, x_test, y_test = random_task(rng, 120, 53, grid=4)
    whole = knn_shapley(x_train, y_train, x_test, y_test, k=3, xp=np, max_bytes=MAX_VALUATION_BYTES)
    chunked = knn_shapley(x_train, y_train, x_test, y_test, k=3, xp=np, max_bytes=max_bytes)
    # The summation tree does not depend on the (power-of-two) chunk size, so the bits are the same.
    np.testing.assert_array_equal(chunked, whole)


def test_string_labels_match_integer_codes() -> None:
    rng = np.random.default_rng(31)
    x_train, y_train, x_test, y_test = random_task(rng, 80, 15, classes=3)
    names = np.array(["cat", "dog", "émeu"])
    as_ints = knn_shapley(x_train, y_train, x_test, y_test, xp=np)
    as_strings = knn_shapley(x_train, names[y_train], x_test, list(names[y_test]), xp=np)
    np.testing.assert_array_equal(as_strings, as_ints)
    assert knn_utility(x_train, names[y_train], x_test, names[y_test], xp=np) == knn_utility(
        x_train, y_train, x_test, y_test, xp=np)


def test_mixed_string_and_integer_labels_are_rejected() -> None:
    with pytest.raises(TypeError, match="both be strings or both be numbers"):
        knn_shapley(np.zeros((2, 1)), np.array(["1", "2"]), np.zeros((1, 1)), np.array([1]), xp=np)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x_train": np.zeros((3, 2)), "x_test": np.zeros((1, 3))}, "features"),
        ({"x_train": np.array([[np.nan, 0.0]] * 3)}, "NaN"),
        ({"x_test": np.zeros((0, 2)), "y_test": np.zeros(0, dtype=int)}, "x_test is empty"),
        ({"y_train": np.zeros(2, dtype=int)}, "y_train has 2 labels"),
        ({"k": 0}, "k must be a positive integer"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    args = {"x_train": np.zeros((3, 2)), "y_train": np.zeros(3, dtype=int), "x_test": np.zeros((1, 2)),
            "y_test": np.zeros(1, dtype=int), "k": 2}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_shapley(args["x_train"], args["y_train"], args["x_test"], args["y_test"], args["k"], xp=np)


def test_empty_training_set() -> None:
    assert knn_shapley(np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros((3, 2)), np.ones(3, dtype=int),
                       xp=np).shape == (0,)
    assert knn_utility(np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros((3, 2)), np.ones(3, dtype=int),
                       xp=np) == 0.0


@pytest.mark.slow  # importing sklearn.datasets alone takes seconds
def test_label_flipped_rows_are_worth_less_than_honest_rows() -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(5)
    order = rng.permutation(len(digits.target))
    train, test = order[:600], order[600:900]
    x_train, y_train = digits.data[train].astype(np.float64), digits.target[train].copy()
    flipped = rng.choice(600, size=30, replace=False)
    y_train[flipped] = (y_train[flipped] + rng.integers(1, 10, size=30)) % 10  # always a wrong digit
    values = knn_shapley(x_train, y_train, digits.data[test], digits.target[test], k=5, xp=np)
    honest = np.setdiff1d(np.arange(600), flipped)
    assert values[flipped].mean() < 0 < values[honest].mean()
    assert (values[flipped] < np.median(values[honest])).all()


def tricky_sets(rng: np.random.Generator, n: int = 1500, t: int = 40, d: int = 8) -> dict[str, tuple]:
    """Feature sets that stress the fast neighbour order: exact ties, near ties, offsets, extreme magnitudes."""
    base = rng.normal(size=(n // 3, d))
    return {
        # name: (x_train, x_test, distances exact in the product?, product used at all?)
        "normal": (rng.normal(size=(n, d)), rng.normal(size=(t, d)), False, True),
        "integer grid": (rng.integers(0, 4, (n, d)) * 1.0, rng.integers(0, 4, (t, d)) * 1.0, True, True),
        "sixteenths": (rng.integers(0, 17, (n, d)) / 16, rng.integers(0, 17, (t, d)) / 16, True, True),
        "pixels": (rng.integers(0, 17, (n, 64)) * 1.0, rng.integers(0, 17, (t, 64)) * 1.0, True, True),
        "tenths (ties, not dyadic)": (rng.integers(0, 5, (n, d)) * 0.1, rng.integers(0, 5, (t, d)) * 0.1, False, True),
        "jittered copies": (np.concatenate([base, base + rng.normal(size=base.shape) * 1e-6,
                                            base + rng.normal(size=base.shape) * 1e-13]),
                            np.concatenate([base[: t // 2], base[: t // 2] + 1e-9]), False, True),
        "copied rows": (np.repeat(rng.normal(size=(n // 10, d)), 10, axis=0)[rng.permutation(n)],
                        rng.normal(size=(t, d)), False, True),
        "offset 1e6": (1e6 + rng.normal(size=(n, d)), 1e6 + rng.normal(size=(t, d)), False, True),
        "offset 1e12, spread 1e-3": (1e12 + rng.normal(size=(n, d)) * 1e-3, 1e12 + rng.normal(size=(t, d)) * 1e-3,
                                     False, True),
        "large integers": (rng.integers(-10**7, 10**7, (n, d)) * 1.0, rng.integers(-10**7, 10**7, (t, d)) * 1.0,
                           False, True),
        "tiny (subnormal squares)": (1e-160 * rng.normal(size=(n, d)), 1e-160 * rng.normal(size=(t, d)), False, True),
        "huge (squares overflow)": (1e150 * rng.normal(size=(n, d)), 1e150 * rng.normal(size=(t, d)), False, False),
        "no features": (np.zeros((n, 0)), np.zeros((t, 0)), True, True),
        "one row": (rng.normal(size=(1, d)), rng.normal(size=(t, d)), False, True),
    }


@pytest.mark.parametrize("name", list(tricky_sets(np.random.default_rng(0))))
def test_fast_neighbour_order_is_the_canonical_sort(name: str) -> None:
    x_train, x_test, exact, product = tricky_sets(np.random.default_rng(1))[name]
    y_train, y_test = np.arange(len(x_train)) % 3, np.arange(len(x_test)) % 3
    p = valuation._prepare(x_train, y_train, x_test, y_test, 5, np)
    assert (p.xtr_aug is not None, p.exact) == (product, exact)
    np.testing.assert_array_equal(valuation._neighbour_order(p, 0, len(x_test), np),
                                  valuation._canonical_order(p, slice(0, len(x_test)), np))


def test_the_near_tie_repair_is_what_keeps_jittered_copies_in_order() -> None:
    # The test above would notice a broken repair: without it, these near ties come out of canonical order.
    x_train, x_test, _, _ = tricky_sets(np.random.default_rng(1))["jittered copies"]
    y_train, y_test = np.arange(len(x_train)) % 3, np.arange(len(x_test)) % 3
    p = valuation._prepare(x_train, y_train, x_test, y_test, 5, np)
    canonical = valuation._canonical_order(p, slice(0, len(x_test)), np)
    p.bound = np.full(len(x_test), -np.inf)  # no gap is ever small enough: nothing gets re-sorted
    assert not np.array_equal(valuation._neighbour_order(p, 0, len(x_test), np), canonical)


@pytest.mark.parametrize("name", ["normal", "sixteenths", "tenths (ties, not dyadic)", "jittered copies",
                                  "copied rows"])
def test_fast_path_gives_the_reference_values_bit_for_bit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x_train, x_test, _, _ = tricky_sets(np.random.default_rng(2), n=600, t=70)[name]
    rng = np.random.default_rng(3)
    y_train, y_test = rng.integers(0, 3, len(x_train)), rng.integers(0, 3, len(x_test))
    fast = knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np)
    monkeypatch.setattr(valuation, "_setup_fast_order", lambda p, xp: None)  # canonical distances + stable argsort
    np.testing.assert_array_equal(fast, knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np))


@pytest.mark.parametrize("seed", range(6))
def test_near_ties_equal_brute_force(seed: int) -> None:
    # Tiny sets where rows are copies up to 1e-15 jitter: the fast order must still match exact brute force.
    rng = np.random.default_rng(200 + seed)
    base = rng.normal(size=(3, 2))
    x_train = base[rng.integers(0, 3, 6)] + rng.choice([0.0, 1e-15, 1e-12], size=(6, 1)) * rng.normal(size=(6, 2))
    x_test = base[rng.integers(0, 3, 2)]
    y_train, y_test = rng.integers(0, 2, 6), rng.integers(0, 2, 2)
    for k in (1, 2, 4):
        np.testing.assert_allclose(knn_shapley(x_train, y_train, x_test, y_test, k, xp=np),
                                   brute_shapley(x_train, y_train, x_test, y_test, k), rtol=0, atol=1e-12)


@pytest.mark.parametrize("workers", [2, 3, 5])
@pytest.mark.parametrize("max_bytes", [MAX_VALUATION_BYTES, 48 * 400 * 3])
def test_thread_count_changes_no_bit(workers: int, max_bytes: int) -> None:
    rng = np.random.default_rng(51)
    x_train, y_train, x_test, y_test = random_task(rng, 400, 97, d=5, classes=4)
    one = knn_shapley(x_train, y_train, x_test, y_test, k=4, xp=np, workers=1)
    many = knn_shapley(x_train, y_train, x_test, y_test, k=4, xp=np, workers=workers, max_bytes=max_bytes)
    np.testing.assert_array_equal(many, one)
    with pytest.raises(ValueError, match="workers"):
        knn_shapley(x_train, y_train, x_test, y_test, xp=np, workers=0)


def test_splitting_a_dataset_over_keys_earns_what_one_key_earns() -> None:
    # Values depend on the pool, never on who sent which rows: one key's rows, or the same rows spread over three
    # keys (each submission a slice, pooled in arrival order), get the same value per row, bit for bit; each key
    # earns the sum over its own rows, and the keys together earn exactly what the single key does.
    rng = np.random.default_rng(61)
    x_train, y_train, x_test, y_test = random_task(rng, 240, 60, d=4, classes=3)
    alone = knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np)
    cuts = [0, 70, 71, 240]  # alice, bob (one row), carol
    parts = [(x_train[a:b], y_train[a:b]) for a, b in itertools.pairwise(cuts)]
    pooled = knn_shapley(np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]),
                         x_test, y_test, k=5, xp=np)
    np.testing.assert_array_equal(pooled, alone)
    per_key = [pooled[a:b].sum() for a, b in itertools.pairwise(cuts)]
    assert math.fsum(per_key) == pytest.approx(alone.sum(), abs=1e-15)
    # Another arrival order (continuous features: no ties) permutes the rows and their values, nothing more.
    order = np.concatenate([np.arange(71, 240), np.arange(70, 71), np.arange(0, 70)])
    np.testing.assert_array_equal(knn_shapley(x_train[order], y_train[order], x_test, y_test, k=5, xp=np),
                                  alone[order])


_MEMORY_PROBE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from rewards.valuation import knn_shapley
    rng = np.random.default_rng(0)
    n, t, d = 20000, 2000, 32
    x_train, x_test = rng.normal(size=(n, d)), rng.normal(size=(t, d))
    y_train, y_test = rng.integers(0, 10, n), rng.integers(0, 10, t)
    def high_water_kib():
        # VmHWM is this address space's own peak; ru_maxrss also keeps the parent's peak across fork/vfork + exec.
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    before = high_water_kib()
    start = time.perf_counter()
    values = knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np)
    seconds = time.perf_counter() - start
    peak = high_water_kib()
    print(json.dumps({"before_kib": before, "peak_kib": peak, "seconds": seconds, "n": int(values.size),
                      "finite": bool(np.isfinite(values).all())}))
""")


@pytest.mark.process
def test_20000_x_2000_x_32_stays_under_1_gib() -> None:
    # A fresh process, so its VmHWM (the peak resident set, which counts every allocation) is this run's alone.
    # Not ru_maxrss: Linux carries the parent's peak into it across exec, and the full suite's pytest is large.
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], cwd=root, capture_output=True, text=True,
                         check=True, timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n"] == 20000 and report["finite"]
    assert report["peak_kib"] < 2**20, f"peak RSS {report['peak_kib'] / 2**20:.2f} GiB"


@pytest.mark.gpu
def test_cupy_suffix_sum_kernel_matches_its_numpy_twin() -> None:
    if not gpu_available():
        pytest.skip("no usable CuPy/CUDA device")
    cp = get_xp("cupy")
    rng = np.random.default_rng(71)
    for shape in [(1, 1), (3, 7), (64, 20000), (5, 1)]:
        a = rng.normal(size=shape) * rng.choice([1e-9, 1.0, 1e9], size=shape)
        on_cpu = valuation._suffix_sum(a.copy(), np)
        on_gpu = to_numpy(valuation._suffix_sum(cp.asarray(a), cp))
        np.testing.assert_array_equal(on_gpu, on_cpu)


def test_get_xp_numpy_and_unknown_names() -> None:
    assert get_xp("numpy") is np
    assert get_xp("NumPy") is np
    with pytest.raises(ValueError, match="unknown array backend"):
        get_xp("jax")
    if not gpu_available():
        assert get_xp("auto") is np
        with pytest.raises(RuntimeError, match="cupy"):
            get_xp("cupy")
    arr = np.arange(3.0)
    assert to_numpy(arr) is arr


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    if not gpu_available():
        pytest.skip("no usable CuPy/CUDA device")
    cp = get_xp("cupy")
    rng = np.random.default_rng(41)
    x_train, y_train, x_test, y_test = random_task(rng, 3000, 301, d=16, classes=5, grid=6)
    on_cpu = knn_shapley(x_train, y_train, x_test, y_test, k=5, xp=np, max_bytes=48 * 3000 * 64)
    on_gpu = knn_shapley(cp.asarray(x_train), y_train, cp.asarray(x_test), y_test, k=5, xp=cp,
                         max_bytes=48 * 3000 * 64)
    assert isinstance(on_gpu, np.ndarray) and on_gpu.dtype == np.float64
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-12)
    assert knn_utility(x_train, y_train, x_test, y_test, k=5, xp=cp) == knn_utility(
        x_train, y_train, x_test, y_test, k=5, xp=np)
