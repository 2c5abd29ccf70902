"""Exact KNN-Shapley data values (Jia et al., VLDB 2019) for the unweighted KNN classifier utility.

The values depend only on each test point's neighbour order: training rows sorted by their *canonical* squared
distance (the features' squared differences added one feature at a time, in feature order) with ties broken by the
lower training index. Finding that order is the expensive part, and it is done fast without giving up exactness:

1. Approximate squared distances come from one matrix product per chunk, |t|^2 + |x|^2 - 2 t.x, on features shifted
   by an integer centre. Its rounding error has a rigorous bound (standard floating-point analysis, valid for any
   BLAS summation order, FMA or not) that is computed per test point.
2. Each distance's bits (non-negative float64 bits order like integers) lose their low b mantissa bits to the
   training index (b = bits needed for N - 1), and each row is sorted as int64 keys: a SIMD sort, no argsort, and
   equal truncated distances come out in index order.
3. Only neighbours whose sorted keys are closer than the error bound can be out of canonical order. Those "clusters"
   are re-sorted with canonical distances computed exactly for just those pairs. When every feature is a small
   dyadic rational (integer pixels, say), the product is exact and the truncation loses nothing, so this step is
   skipped altogether.

The recursion runs as one sequential reversed cumulative sum per test point (a CuPy RawKernel twin adds in the same
order), and per-row sums over test points use a fixed pairwise tree whose shape does not depend on the chunk size or
the number of threads. So the values are bit-identical across chunk sizes and thread counts, by construction across
backends (the GPU tests check it), and independent of the BLAS library, which only decides which pairs get
re-checked.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from rewards.backend import get_xp, to_numpy

MAX_VALUATION_BYTES = 512 * 2**20
"""Default working-memory limit for the chunks of test points in flight at once (bytes, all threads together)."""

# Peak bytes per (test point, training row) pair inside a chunk: key buffer, neighbour order, label matches,
# recursion terms, scatter buffer and the pairwise-sum scratch (25 measured with tracemalloc), with headroom.
_BYTES_PER_PAIR = 48

# On the CPU a chunk holds at most this many test points, so its arrays stay in the caches; more memory buys nothing.
_CPU_CHUNK_ROWS = 16

# Unit roundoff of float64 and the smallest subnormal, for the distance error bound.
_U = 2.0**-53
_TINY = math.ulp(0.0)

# Finest grid 2^-e tried when checking whether all features are exact multiples of 2^-e (exact distances).
_MAX_DYADIC_EXPONENT = 30

# A row whose near-tie clusters cover more than this fraction of its neighbours is re-sorted whole instead.
_HEAVY_FRACTION = 0.25

_SUFFIX_SUM_CUDA = r"""
extern "C" __global__
void tributary_suffix_sum(double* a, const long long rows, const long long n) {
    const long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows || n == 0) return;
    double* row = a + r * n;
    double acc = row[n - 1];
    for (long long j = n - 2; j >= 0; --j) {
        acc = acc + row[j];
        row[j] = acc;
    }
}
"""


@dataclass
class _Prepared:
    """Validated inputs on the target array module, plus what the fast neighbour order needs."""

    xtr: Any  # (N, d) float64, as given: canonical distances are computed from these
    xte: Any  # (T, d) float64
    ytr: Any  # (N,) int32 label codes
    yte: Any  # (T,) int32 label codes
    n_train: int
    n_test: int
    # Augmented centred rows, so that one matrix product gives the distances: a_t . b_x = -2 t.x + |t|^2 + |x|^2.
    xtr_aug: Any = None  # (N, d + 2): [x', 1, |x'|^2]  (None: fast path off, canonical sort only)
    xte_aug: Any = None  # (T, d + 2): [-2 t', |t'|^2, 1]
    bound: Any = None  # (T,) bound on |approximate - canonical| distance per test point; None when exact
    exact: bool = False  # the product and the key truncation are exact: sorted keys are the canonical order
    bits: int = 1  # low key bits that hold the training index
    _xtr_t: Any = field(default=None, repr=False)  # (d, N) copy for whole-row canonical distances, made on demand
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def xtr_t(self, xp: ModuleType) -> Any:
        """Feature-major training features (one contiguous row per feature), built once when first needed."""
        with self._lock:
            if self._xtr_t is None:
                self._xtr_t = xp.ascontiguousarray(self.xtr.T)
            return self._xtr_t


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
    arr = xp.ascontiguousarray(arr.astype(xp.float64, copy=False))
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
    """Validate shapes, labels and k, move everything onto `xp`, and set up the fast neighbour order."""
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
    # The narrowest code type makes the label gather per neighbour cheaper (it runs once per pair).
    codes = np.int8 if max(ytr.max(initial=0), yte.max(initial=0)) < 2**7 else np.int32
    p = _Prepared(xtr=xtr, xte=xte, ytr=xp.asarray(ytr.astype(codes)), yte=xp.asarray(yte.astype(codes)),
                  n_train=int(xtr.shape[0]), n_test=int(xte.shape[0]))
    if p.n_train:
        _setup_fast_order(p, xp)
    return p


def _setup_fast_order(p: _Prepared, xp: ModuleType) -> None:
    """Centre the features, decide whether the matrix-product distances are exact, and bound their error if not."""
    n, d = p.xtr.shape
    bits = max(1, (n - 1).bit_length())
    if bits > 40:  # keys keep 52 - bits mantissa bits; beyond this the near-tie clusters would be too coarse
        return
    if d == 0:
        lo_f = hi_f = xp.zeros(0, dtype=xp.float64)
    else:
        lo_f = xp.minimum(p.xtr.min(axis=0), p.xte.min(axis=0))
        hi_f = xp.maximum(p.xtr.max(axis=0), p.xte.max(axis=0))
    # An integer centre keeps dyadic features exact after the shift; halving first avoids overflow.
    centre = xp.floor(lo_f * 0.5 + hi_f * 0.5)
    if not bool(xp.isfinite(centre).all()):
        return
    # Augmented rows built in place (no extra copies of the pool): [x', 1, |x'|^2] and [-2 t', |t'|^2, 1].
    xtr_aug = xp.empty((n, d + 2), dtype=xp.float64)
    xte_aug = xp.empty((p.n_test, d + 2), dtype=xp.float64)
    for aug, x in ((xtr_aug, p.xtr), (xte_aug, p.xte)):
        xp.subtract(x, centre[None, :], out=aug[:, :d])
    amax = max(float(xp.abs(aug[:, :d]).max()) if d and aug.shape[0] else 0.0 for aug in (xtr_aug, xte_aug))
    # Every distance and every partial sum of the product is at most 4 d amax^2; far below overflow, or give up.
    if not math.isfinite(amax) or 4.0 * max(d, 1) * amax * amax > 1e300:
        return
    exact = _dyadic_exact(p, centre, xtr_aug[:, :d], xte_aug[:, :d], amax, bits, xp)
    for aug in (xtr_aug, xte_aug):
        c = aug[:, :d]
        aug[:, d + 1] = (c * c).sum(axis=1) if d else 0.0
    xtr_aug[:, d] = 1.0
    xte_aug[:, d] = xte_aug[:, d + 1]
    xte_aug[:, d + 1] = 1.0
    xte_aug[:, :d] *= -2.0
    p.xtr_aug, p.xte_aug, p.bits, p.exact = xtr_aug, xte_aug, bits, exact
    if not exact:
        # One dot product of length d + 2 (the -2 scaling is exact) over terms whose magnitudes sum to at most
        # |t'|^2 + |x'|^2 + 2 |t'||x'| = R^2 (R = |t'| + max |x'|), with norms already within (d) u: the product is
        # within about (2d + 2) u R^2 of the real centred distance, which is within 2 u R^2 of the real distance,
        # which is within (d + 2) u R^2 of the canonical one: (3d + 6) u R^2 in all. Doubled for safety, plus
        # subnormal slack (absolute rounding of tiny products, and truncation of subnormal keys).
        r = xp.sqrt(xte_aug[:, d]) + math.sqrt(float(xtr_aug[:, d + 1].max()))
        p.bound = 2.0 * (3 * d + 8) * _U * (r * r) + (2.0**bits + 8.0 * (d + 2)) * _TINY


def _blocks(a: Any, rows: int = 1 << 16) -> Any:
    """Row blocks of `a`, so whole-array checks need only block-sized temporaries."""
    for lo in range(0, a.shape[0], rows):
        yield a[lo : lo + rows]


def _dyadic_exact(p: _Prepared, centre: Any, xtr_c: Any, xte_c: Any, amax: float, bits: int,
                 xp: ModuleType) -> bool:
    """True when all centred features are multiples of one 2^-e small enough that every distance is exact.

    Then each product, partial sum and distance is an integer multiple of 2^-2e below 2^(53 - bits), so the matrix
    product rounds nothing in any summation order and dropping `bits` low mantissa bits loses nothing: sorted keys
    are exactly (canonical distance, index). The shift by the integer centre must have been exact too: with
    |centre| + amax below 2^(52 - e), adding the centre back is exact, so getting the input back proves it.
    """
    d = p.xtr.shape[1]
    if d == 0:
        return True
    cmax = float(xp.abs(centre).max())
    # The finest grid 2^-e that the magnitudes allow; multiples of any coarser 2^-e are multiples of this one too.
    e = -1
    while e < _MAX_DYADIC_EXPONENT and 4.0 * d * (amax * 2.0 ** (e + 1)) ** 2 < 2.0 ** (53 - bits) \
            and (cmax + amax) * 2.0 ** (e + 1) < 2.0**52:
        e += 1
    if e < 0:
        return False
    scale = 2.0**e
    # Block by block, so non-dyadic data is usually rejected after the first block.
    return all(bool(xp.all(xp.floor(blk * scale) == blk * scale)) for a in (xtr_c, xte_c) for blk in _blocks(a)) \
        and all(bool(xp.all(c + centre == x)) for a, b in ((xtr_c, p.xtr), (xte_c, p.xte))
                for c, x in zip(_blocks(a), _blocks(b)))


def _chunk_rows(n_train: int, max_bytes: int, workers: int = 1, cap: int | None = None) -> int:
    """Test points per chunk: the largest power of two whose working set fits `max_bytes` over `workers` (>= 1)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    rows = max(1, int(max_bytes) // (_BYTES_PER_PAIR * max(n_train, 1) * max(workers, 1)))
    if cap is not None:
        rows = min(rows, cap)
    # Power-of-two chunks aligned at multiples of their size are subtrees of the one global summation tree.
    return 1 << (rows.bit_length() - 1)


def _sq_distances(xtr_t: Any, xte: Any, xp: ModuleType) -> Any:
    """Canonical squared Euclidean distances (chunk x N), accumulated feature by feature with elementwise ops only.

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


def _pair_sq_distances(p: _Prepared, test_rows: Any, train_rows: Any, xp: ModuleType) -> Any:
    """Canonical squared distances for listed (test point, training row) pairs: the same operations, bit for bit."""
    d = p.xtr.shape[1]
    if d == 0:
        return xp.zeros(test_rows.shape[0], dtype=xp.float64)
    dist = p.xte[test_rows, 0] - p.xtr[train_rows, 0]
    xp.multiply(dist, dist, out=dist)
    for f in range(1, d):
        tmp = p.xte[test_rows, f] - p.xtr[train_rows, f]
        xp.multiply(tmp, tmp, out=tmp)
        xp.add(dist, tmp, out=dist)
    return dist


def _canonical_order(p: _Prepared, test_rows: Any, xp: ModuleType) -> Any:
    """Reference order for the given test points (a slice or index array): canonical distances, stable sort."""
    dist = _sq_distances(p.xtr_t(xp), p.xte[test_rows], xp)
    return xp.argsort(dist, axis=1, kind="stable")


def _neighbour_order(p: _Prepared, lo: int, hi: int, xp: ModuleType) -> Any:
    """Training indices (int64) sorted by (canonical distance, index), one row per test point lo:hi."""
    n = p.n_train
    if p.xtr_aug is None:
        return _canonical_order(p, slice(lo, hi), xp)
    # Approximate distances -2 t.x + |t|^2 + |x|^2 in one matrix product; any rounding is within p.bound.
    dist = xp.matmul(p.xte_aug[lo:hi], p.xtr_aug.T)
    keys = dist.view(xp.int64)
    # Non-negative float64 bits order as integers; negatives (rounding below 0, and -0.0) become +0.0.
    xp.maximum(keys, 0, out=keys)
    mask = (1 << p.bits) - 1
    xp.bitwise_and(keys, ~mask, out=keys)
    xp.bitwise_or(keys, xp.arange(n, dtype=xp.int64)[None, :], out=keys)
    keys.sort(axis=1)
    order = xp.bitwise_and(keys, mask)
    if not p.exact:
        _fix_near_ties(p, order, keys.view(xp.float64), lo, xp)
    return order


def _fix_near_ties(p: _Prepared, order: Any, keyed: Any, lo: int, xp: ModuleType) -> None:
    """Re-sort, by canonical distance then index, every run of sorted neighbours closer than the error bound.

    `keyed` is the sorted keys read as float64: the truncated distance v plus the index in its low bits, so
    v <= keyed < v (1 + r) (+ subnormal slack inside B), r = 2^(bits - 52). If a pair is out of canonical order,
    every adjacent gap of v between them is at most the sum of their two errors, 4 (B + r v) with room to spare,
    hence every adjacent gap of `keyed` at most 4 B + 6 r keyed. A maximal run of such gaps contains every
    misordered pair, and runs are separated by more than any error, so sorting all run members of a row jointly by
    (canonical distance, index) puts each back into its own run's positions.
    """
    c, n = order.shape
    if n < 2:
        return
    r = 2.0 ** (p.bits - 52)
    gap = keyed[:, 1:] * (1.0 - 6.0 * r)
    gap -= keyed[:, :-1]
    flag = gap <= (4.0 * p.bound[lo : lo + c])[:, None]
    del gap
    rows = xp.flatnonzero(flag.any(axis=1))
    if rows.size == 0:
        return
    f = flag[rows]
    member = xp.zeros((rows.size, n), dtype=bool)
    member[:, 1:] = f
    member[:, :-1] |= f
    del f, flag
    heavy = member.sum(axis=1) > _HEAVY_FRACTION * n
    if bool(heavy.any()):
        whole = rows[heavy]
        order[whole] = _canonical_order(p, lo + whole, xp)
        keep = ~heavy
        rows, member = rows[keep], member[keep]
        if rows.size == 0:
            return
    rr, pos = xp.nonzero(member)
    del member
    row = rows[rr]
    idx = order[row, pos]
    exact = _pair_sq_distances(p, lo + row, idx, xp)
    perm = _lexsort3(idx, exact, row, xp)
    order[row, pos] = idx[perm]


def _lexsort3(minor: Any, middle: Any, major: Any, xp: ModuleType) -> Any:
    """Permutation sorting by (major, middle, minor); on the host for CuPy arrays (the clusters are small)."""
    if xp is np:
        return np.lexsort((minor, middle, major))
    perm = np.lexsort((to_numpy(minor), to_numpy(middle), to_numpy(major)))
    return xp.asarray(perm)


def _suffix_sum(a: Any, xp: ModuleType) -> Any:
    """In-place inclusive suffix sums along axis 1, added strictly from the far end: s[j] = a[j] + s[j+1].

    NumPy's accumulate is sequential; CuPy runs a RawKernel twin that adds in the same order (same bits).
    """
    if xp is np:
        rev = a[:, ::-1]
        np.cumsum(rev, axis=1, out=rev)
        return a
    kernel = _cuda_suffix_kernel(xp)
    a = xp.ascontiguousarray(a)
    rows, n = a.shape
    threads = 128
    kernel(((rows + threads - 1) // threads,), (threads,), (a, np.int64(rows), np.int64(n)))
    return a


_KERNELS: dict[int, Any] = {}


def _cuda_suffix_kernel(xp: ModuleType) -> Any:
    """The compiled suffix-sum RawKernel for this CuPy module (compiled once)."""
    key = id(xp)
    if key not in _KERNELS:
        _KERNELS[key] = xp.RawKernel(_SUFFIX_SUM_CUDA, "tributary_suffix_sum")
    return _KERNELS[key]


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


def _chunk_values(p: _Prepared, lo: int, hi: int, coef: Any, last: float, xp: ModuleType) -> Any:
    """Sum over test points lo:hi of each training row's KNN-Shapley value (pairwise over the chunk's rows)."""
    n = p.n_train
    order = _neighbour_order(p, lo, hi, xp)
    match = xp.take(p.ytr, order) == p.yte[lo:hi, None]
    # terms[:, i-1] = step of s[i] over s[i+1] (1-based ranks); the last column is s[N] itself.
    terms = xp.empty((hi - lo, n), dtype=xp.float64)
    m8 = match.view(xp.int8)
    xp.subtract(m8[:, :-1], m8[:, 1:], out=terms[:, :-1])
    xp.multiply(terms[:, :-1], coef[None, :], out=terms[:, :-1])
    xp.multiply(m8[:, -1], last, out=terms[:, -1])
    del match, m8
    s = _suffix_sum(terms, xp)
    # Scatter each s back to its training row (a permutation per test point, so no write conflicts).
    order += (xp.arange(hi - lo, dtype=order.dtype) * n)[:, None]
    out = xp.empty_like(s)
    out.reshape(-1)[order.reshape(-1)] = s.reshape(-1)
    del order, s, terms
    return _pairwise_rows(out, xp)


def _default_workers(xp: ModuleType) -> int:
    """Threads to use: every core the process may run on for NumPy (its kernels release the GIL), one for CuPy."""
    if xp is not np:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _single_threaded_blas(xp: ModuleType) -> Any:
    """Keep BLAS to one thread while we run: the products are small, and idle BLAS threads spin on the cores."""
    if xp is not np:
        return nullcontext()
    try:  # threadpoolctl comes with scikit-learn; without it BLAS keeps its own thread count
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def knn_shapley(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    k: int = 5,
    *,
    xp: ModuleType | str | None = None,
    max_bytes: int = MAX_VALUATION_BYTES,
    workers: int | None = None,
) -> np.ndarray:
    """Exact KNN-Shapley value of every training row, averaged over test points (float64, one per row).

    Per test point, with training rows sorted by distance (ties: lower index first), s[N] = 1[y_N = y] / k *
    min(k, N) / N (= 1[y_N = y] / N when N >= k) and s[i] = s[i+1] + (1[y_i = y] - 1[y_{i+1} = y]) / k * min(k, i) / i.
    Test points are processed in power-of-two chunks sized from `max_bytes` (the limit for all chunks in flight),
    on `workers` threads (None: every core for NumPy, 1 for CuPy); `xp` (None = auto, a name, or numpy/cupy) picks
    where it runs. The result is bit-identical for every chunk size and thread count.
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
    workers = _default_workers(xp) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    chunk = _chunk_rows(n, max_bytes, workers, _CPU_CHUNK_ROWS if xp is np else None)
    spans = [(lo, min(lo + chunk, p.n_test)) for lo in range(0, p.n_test, chunk)]
    workers = min(workers, len(spans))
    acc = _TreeSum()
    with _single_threaded_blas(xp):
        if workers == 1:
            for lo, hi in spans:
                acc.push(_chunk_values(p, lo, hi, coef, last, xp))
            return to_numpy(acc.total()).astype(np.float64, copy=False) / float(p.n_test)
        # Chunks run out of order on the threads but are added in chunk order, so the tree (and every bit) is fixed.
        # At most 2 * workers chunks are in flight, which bounds both working memory and finished sums waiting.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque[Future] = deque()
            for lo, hi in spans:
                if len(pending) >= 2 * workers:
                    acc.push(pending.popleft().result())
                pending.append(pool.submit(_chunk_values, p, lo, hi, coef, last, xp))
            while pending:
                acc.push(pending.popleft().result())
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
    chunk = _chunk_rows(p.n_train, max_bytes, 1, _CPU_CHUNK_ROWS if xp is np else None)
    hits = 0
    for lo in range(0, p.n_test, chunk):
        hi = min(lo + chunk, p.n_test)
        order = _neighbour_order(p, lo, hi, xp)[:, :top]
        hits += int((xp.take(p.ytr, order) == p.yte[lo:hi, None]).sum(dtype=xp.int64))
    return hits / (int(k) * p.n_test)
