"""Exact KNN-Shapley data values (Jia et al., VLDB 2019) for the unweighted KNN classifier utility.

Every floating-point step is either an elementwise IEEE operation or a reduction whose tree is fixed here (not left
to the library), so NumPy and CuPy should give bit-identical values, and any power-of-two chunking gives the same
values as one chunk. That keeps the ledger independent of the backend and of the memory limit."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from rewards.backend import get_xp, to_numpy

MAX_VALUATION_BYTES = 512 * 2**20
"""Default working-memory limit for one chunk of test points (bytes)."""

# Peak bytes per (test point, training row) pair inside a chunk: distance/term buffer, scan/scatter buffer, sort
# indices, the gathered labels and the sort's own scratch (CuPy's argsort copies keys and indices).
_BYTES_PER_PAIR = 48


@dataclass(frozen=True)
class _Prepared:
    """Validated inputs on the target array module."""

    xtr_t: Any  # (d, N) float64, feature-major so each feature is one contiguous row
    xte: Any  # (T, d) float64
    ytr: Any  # (N,) int32 label codes
    yte: Any  # (T,) int32 label codes
    n_train: int
    n_test: int


def _resolve_xp(xp: ModuleType | str | None) -> ModuleType:
    """Map None / a backend name / a module to the array module to compute with."""
    if xp is None:
        return get_xp("auto")
    if isinstance(xp, str):
        return get_xp(xp)
    return xp


def _as_float_matrix(a: Any, what: str, xp: ModuleType) -> Any:
    """`a` as a 2-D float64 array on `xp`, with finite values only (NaN would make the sort order arbitrary)."""
    arr = to_numpy(a) if xp is np else xp.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows x features), got shape {tuple(arr.shape)}")
    arr = arr.astype(xp.float64, copy=False)
    if arr.size and not bool(xp.isfinite(arr).all()):
        raise ValueError(f"{what} contains NaN or infinite values; impute or drop those rows before valuation")
    return arr


def _label_codes(y_train: Any, y_test: Any) -> tuple[np.ndarray, np.ndarray]:
    """Map train and test labels (ints or strings) to shared int32 codes, so comparisons are integer equality."""
    ytr = np.asarray(to_numpy(y_train))
    yte = np.asarray(to_numpy(y_test))
    for arr, what in ((ytr, "y_train"), (yte, "y_test")):
        if arr.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    text = {"U", "S"}
    if (ytr.dtype.kind in text) != (yte.dtype.kind in text) and ytr.size and yte.size:
        # NumPy would otherwise turn 1 into "1" and match it against the string label "1".
        raise TypeError(f"y_train ({ytr.dtype}) and y_test ({yte.dtype}) must both be strings or both be numbers")
    both = np.concatenate([ytr, yte])
    if both.dtype.kind == "f" and not np.isfinite(both).all():
        raise ValueError("labels contain NaN or infinite values; every row needs a label")
    try:
        _, codes = np.unique(both, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"labels must be all strings or all numbers, not a mix ({exc})") from exc
    codes = codes.reshape(-1).astype(np.int32)
    return codes[: ytr.size], codes[ytr.size :]


def _prepare(x_train: Any, y_train: Any, x_test: Any, y_test: Any, k: int, xp: ModuleType) -> _Prepared:
    """Validate shapes, labels and k, and move everything onto `xp`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    xtr = _as_float_matrix(x_train, "x_train", xp)
    xte = _as_float_matrix(x_test, "x_test", xp)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"x_train has {xtr.shape[1]} features but x_test has {xte.shape[1]}")
    ytr, yte = _label_codes(y_train, y_test)
    if ytr.size != xtr.shape[0]:
        raise ValueError(f"y_train has {ytr.size} labels for {xtr.shape[0]} rows of x_train")
    if yte.size != xte.shape[0]:
        raise ValueError(f"y_test has {yte.size} labels for {xte.shape[0]} rows of x_test")
    if xte.shape[0] == 0:
        raise ValueError("x_test is empty: values are averaged over test points, so at least one is needed")
    return _Prepared(
        xtr_t=xp.ascontiguousarray(xtr.T),
        xte=xte,
        ytr=xp.asarray(ytr),
        yte=xp.asarray(yte),
        n_train=int(xtr.shape[0]),
        n_test=int(xte.shape[0]),
    )


def _chunk_rows(n_train: int, max_bytes: int) -> int:
    """Test points per chunk: the largest power of two whose working set fits `max_bytes` (at least 1)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    rows = max(1, int(max_bytes) // (_BYTES_PER_PAIR * max(n_train, 1)))
    # Power-of-two chunks aligned at multiples of their size are subtrees of the one global summation tree.
    return 1 << (rows.bit_length() - 1)


def _sq_distances(xtr_t: Any, xte: Any, xp: ModuleType) -> Any:
    """Squared Euclidean distances (chunk x N), accumulated feature by feature with elementwise ops only.

    Unlike the ||a||^2 + ||b||^2 - 2ab expansion, this has no BLAS-dependent rounding: identical rows get identical
    distances, and both backends get the same bits.
    """
    d, n = xtr_t.shape
    dist = xp.zeros((xte.shape[0], n), dtype=xp.float64)
    if d == 0:
        return dist
    xte_t = xp.ascontiguousarray(xte.T)
    xp.subtract(xte_t[0][:, None], xtr_t[0][None, :], out=dist)
    xp.multiply(dist, dist, out=dist)
    tmp = xp.empty_like(dist)
    for f in range(1, d):
        xp.subtract(xte_t[f][:, None], xtr_t[f][None, :], out=tmp)
        xp.multiply(tmp, tmp, out=tmp)
        xp.add(dist, tmp, out=dist)
    return dist


def _sorted_matches(p: _Prepared, lo: int, hi: int, xp: ModuleType) -> tuple[Any, Any, Any]:
    """For test points lo:hi: (distance buffer, stable neighbour order, int8 label-match in that order)."""
    dist = _sq_distances(p.xtr_t, p.xte[lo:hi], xp)
    # Stable: equal distances keep the lower training index first.
    order = xp.argsort(dist, axis=1, kind="stable")
    match = (p.ytr[order] == p.yte[lo:hi, None]).view(xp.int8)
    return dist, order, match


def _suffix_sum(a: Any, buf: Any, xp: ModuleType) -> Any:
    """Inclusive suffix sums along axis 1 by doubling (Hillis-Steele); the addition tree is fixed, not library's."""
    n = a.shape[1]
    shift = 1
    while shift < n:
        xp.add(a[:, :-shift], a[:, shift:], out=buf[:, :-shift])
        buf[:, -shift:] = a[:, -shift:]
        a, buf = buf, a
        shift *= 2
    return a


def _pairwise_rows(a: Any, xp: ModuleType) -> Any:
    """Sum the rows of `a` by pairing neighbours (0+1, 2+3, ...) level by level, carrying an odd last row."""
    while a.shape[0] > 1:
        half = a.shape[0] // 2
        s = a[0 : 2 * half : 2] + a[1 : 2 * half : 2]
        a = xp.concatenate([s, a[-1:]]) if a.shape[0] % 2 else s
    return a[0]


class _TreeSum:
    """Combine equal-size chunk sums into the same pairwise tree a single chunk would build (a binary counter)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, Any]] = []

    def push(self, node: Any) -> None:
        level = 0
        while self._stack and self._stack[-1][0] == level:
            node = self._stack.pop()[1] + node
            level += 1
        self._stack.append((level, node))

    def total(self) -> Any:
        # The missing right siblings are implicit zeros, so the rest folds from the right.
        total = self._stack[-1][1]
        for _, node in reversed(self._stack[:-1]):
            total = node + total
        return total


def knn_shapley(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    k: int = 5,
    *,
    xp: ModuleType | str | None = None,
    max_bytes: int = MAX_VALUATION_BYTES,
) -> np.ndarray:
    """Exact KNN-Shapley value of every training row, averaged over test points (float64, one per row).

    Per test point, with training rows sorted by distance (ties: lower index first), s[N] = 1[y_N = y] / k *
    min(k, N) / N (= 1[y_N = y] / N when N >= k) and s[i] = s[i+1] + (1[y_i = y] - 1[y_{i+1} = y]) / k * min(k, i) / i.
    Test points are processed in power-of-two chunks sized from `max_bytes`; `xp` (None = auto, a name, or
    numpy/cupy) picks where it runs.
    """
    xp = _resolve_xp(xp)
    p = _prepare(x_train, y_train, x_test, y_test, k, xp)
    n = p.n_train
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    i = np.arange(1, n, dtype=np.float64)
    # coef[i-1] = min(k, i) / (k * i) for 1-based i = 1..N-1: the recursion's step weight, computed once on the host.
    coef = xp.asarray(np.minimum(float(k), i) / (float(k) * i))
    # s[N] = 1[y_N = y] * min(k, N) / (k * N): the farthest row only counts when fewer than k rows precede it.
    # For N >= k this is the paper's 1[y_N = y] / N; for N < k the paper's form would break efficiency.
    last = min(k, n) / (float(k) * n)
    chunk = _chunk_rows(n, max_bytes)
    acc = _TreeSum()
    for lo in range(0, p.n_test, chunk):
        hi = min(lo + chunk, p.n_test)
        terms, order, match = _sorted_matches(p, lo, hi, xp)
        # terms[:, i-1] = step of s[i] over s[i+1]; the last column is s[N] itself. Reuses the distance buffer.
        xp.subtract(match[:, :-1], match[:, 1:], out=terms[:, :-1])
        xp.multiply(terms[:, :-1], coef[None, :], out=terms[:, :-1])
        xp.multiply(match[:, -1], last, out=terms[:, -1])
        buf = xp.empty_like(terms)
        s = _suffix_sum(terms, buf, xp)
        out = buf if s is terms else terms
        # Scatter each s back to its training row (a permutation per test point, so no write conflicts).
        order += (xp.arange(hi - lo, dtype=order.dtype) * n)[:, None]
        out.reshape(-1)[order.reshape(-1)] = s.reshape(-1)
        acc.push(_pairwise_rows(out, xp))
    return to_numpy(acc.total()).astype(np.float64, copy=False) / float(p.n_test)


def knn_utility(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    k: int = 5,
    *,
    xp: ModuleType | str | None = None,
    max_bytes: int = MAX_VALUATION_BYTES,
) -> float:
    """Utility of the whole training set: mean over test points of (label matches among the min(k, N) nearest) / k.

    The empty training set has utility 0. Counts are integers, so the result does not depend on the backend.
    """
    xp = _resolve_xp(xp)
    p = _prepare(x_train, y_train, x_test, y_test, k, xp)
    if p.n_train == 0:
        return 0.0
    top = min(int(k), p.n_train)
    chunk = _chunk_rows(p.n_train, max_bytes)
    hits = 0
    for lo in range(0, p.n_test, chunk):
        _, _, match = _sorted_matches(p, lo, min(lo + chunk, p.n_test), xp)
        hits += int(match[:, :top].sum(dtype=xp.int64))
    return hits / (int(k) * p.n_test)
