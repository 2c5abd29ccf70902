"""KNN-Shapley: exact against brute-force permutations, efficient, order-invariant, chunk- and backend-independent."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pytest

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
