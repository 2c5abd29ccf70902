"""Exact nearest rows by canonical squared distance: what the lake-conditioned valuation keeps per test point.

The canonical squared distance adds the features' squared differences one feature at a time, in feature order
(the same definition as rewards.valuation), so identical rows get identical distances and the result does not depend
on the BLAS library. Finding the nearest rows is done fast without giving up exactness: one matrix product per chunk
gives approximate distances whose rounding error is bounded per query row (standard floating-point analysis, any
summation order); every reference row that could be among the nearest within that bound is re-measured canonically,
and the order is (canonical distance, reference index). Once k rows are held, a chunk needs only a comparison against
the current k-th distance, so building a 10M-row lake's neighbours costs one product and one compare per pair.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

_U = 2.0**-53  # unit roundoff of float64
_U32 = 2.0**-24  # unit roundoff of float32
MAX_CHUNK_BYTES = 128 * 2**20
"""Working memory for one chunk's approximate distance matrix (bytes)."""


def canonical_pairs(xq: np.ndarray, xr: np.ndarray, qi: np.ndarray, ri: np.ndarray) -> np.ndarray:
    """Canonical squared distances between listed pairs (query row qi[n], reference row ri[n]).

    Rows are gathered a block at a time (contiguous reads), then the squared differences are added one feature at a
    time in feature order: the same sums, bit for bit, as adding column by column from zero.
    """
    d = xq.shape[1]
    out = np.zeros(qi.size, dtype=np.float64)
    if d == 0:
        return out
    block = max(1, _PAIR_BLOCK_VALUES // d)
    for lo in range(0, qi.size, block):
        diff = np.asarray(xq[qi[lo:lo + block]], dtype=np.float64)
        diff -= xr[ri[lo:lo + block]]
        diff *= diff
        acc = out[lo:lo + block]
        acc += diff[:, 0]
        for f in range(1, d):
            acc += diff[:, f]
    return out


_PAIR_BLOCK_VALUES = 2**19  # canonical_pairs' working block: 4 MiB of float64 differences


def canonical_matrix(xq: np.ndarray, xr: np.ndarray) -> np.ndarray:
    """Canonical squared distances, every query row against every reference row (Q x R)."""
    out = np.zeros((xq.shape[0], xr.shape[0]), dtype=np.float64)
    tmp = np.empty_like(out)
    xq_t, xr_t = np.ascontiguousarray(xq.T), np.ascontiguousarray(xr.T)
    for f in range(xq.shape[1]):
        np.subtract(xq_t[f][:, None], xr_t[f][None, :], out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        out += tmp
    return out


def _norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _bound(d: int, nq: np.ndarray, top: float, low: bool = False) -> np.ndarray:
    """Per query row, a bound on |approximate - canonical| squared distance for |q|^2 + |r|^2 - 2 q.r.

    In float64 each of the three terms is within (d + 2) u (|q|^2 + |r|^2) of its real value and the canonical sum
    within d u |q - r|^2 <= 2 d u (|q|^2 + |r|^2); 8 (d + 4) u (|q|^2 + max |r|^2) covers both with a factor of two
    to spare. In float32 the inputs' rounding (each within u32 relatively) moves a squared distance by at most
    7 u32 (|q|^2 + |r|^2) and the arithmetic by 2 (d + 2) u32 (...); 4 (d + 8) u32 covers both twice over. Plus an
    absolute term for subnormal rounding.
    """
    unit = 4.0 * (d + 8) * _U32 if low else 8.0 * (d + 4) * _U
    return unit * (nq + top) + 1e-290


@dataclass
class Nearest:
    """Per query row its k nearest reference rows: canonical squared distances ascending (inf where fewer than k
    references exist) and reference indices (-1 there). Ties: the lower index first."""

    dist: np.ndarray  # (Q, k) float64
    index: np.ndarray  # (Q, k) int64

    @property
    def k(self) -> int:
        return int(self.dist.shape[1])

    @classmethod
    def empty(cls, n_query: int, k: int) -> Nearest:
        return cls(np.full((n_query, k), np.inf), np.full((n_query, k), -1, dtype=np.int64))

    def merge(self, q: np.ndarray, dist: np.ndarray, index: np.ndarray) -> None:
        """Fold candidate pairs (query q, canonical dist, reference index) into the kept k, in place.

        Only the queries named in `q` are touched, so a chunk that offers few pairs costs little. The candidates
        (sorted among themselves) are merged into the held rows (already sorted) by counting, per candidate, the
        held rows ahead of it: O(candidates x k), no sort of what is held.
        """
        if q.size == 0:
            return
        k = self.k
        if k > _COUNTING_MERGE_MAX_K:
            self._merge_by_sorting(q, dist, index)
            return
        order = np.lexsort((index, dist, q))
        q, dist, index = q[order], dist[order], index[order]
        r = np.arange(q.size) - np.searchsorted(q, q, side="left")  # rank among the query's candidates
        if (r >= k).any():
            top = r < k
            q, dist, index, r = q[top], dist[top], index[top], r[top]
        last = np.r_[q[1:] != q[:-1], True]
        uq = q[last]
        row = np.cumsum(np.r_[0, last[:-1]])  # each candidate's position in uq
        hd, hi = self.dist[uq], self.index[uq]
        hdq, hiq = hd[row], hi[row]
        ahead = (hdq < dist[:, None]) | ((hdq == dist[:, None]) & (hiq < index[:, None]))
        p = ahead.sum(axis=1)  # held rows ahead of the candidate (held rows are sorted)
        # A held row at position j moves down by the candidates that go before it: those with p <= j.
        shift = np.bincount(row * (k + 1) + p, minlength=uq.size * (k + 1)).reshape(uq.size, k + 1)
        held_rank = np.arange(k)[None, :] + np.cumsum(shift, axis=1)[:, :k]
        cand_rank = p + r
        nd = np.full((uq.size, k), np.inf)
        ni = np.full((uq.size, k), -1, dtype=np.int64)
        hq, hj = np.nonzero(held_rank < k)
        nd[hq, held_rank[hq, hj]] = hd[hq, hj]
        ni[hq, held_rank[hq, hj]] = hi[hq, hj]
        c = cand_rank < k
        nd[row[c], cand_rank[c]] = dist[c]
        ni[row[c], cand_rank[c]] = index[c]
        self.dist[uq], self.index[uq] = nd, ni

    def _merge_by_sorting(self, q: np.ndarray, dist: np.ndarray, index: np.ndarray) -> None:
        """`merge` for a wide k: held rows and candidates sorted together, O((held + candidates) log)."""
        k = self.k
        uq, inv = np.unique(q, return_inverse=True)
        hd, hi = self.dist[uq], self.index[uq]
        held = np.isfinite(hd)
        all_q = np.concatenate([np.nonzero(held)[0], inv.reshape(-1)])
        all_d = np.concatenate([hd[held], dist])
        all_i = np.concatenate([hi[held], index])
        order = np.lexsort((all_i, all_d, all_q))
        all_q, all_d, all_i = all_q[order], all_d[order], all_i[order]
        rank = np.arange(all_q.size) - np.searchsorted(all_q, np.arange(uq.size))[all_q]
        keep = rank < k
        hd.fill(np.inf)
        hi.fill(-1)
        hd[all_q[keep], rank[keep]] = all_d[keep]
        hi[all_q[keep], rank[keep]] = all_i[keep]
        self.dist[uq], self.index[uq] = hd, hi


_COUNTING_MERGE_MAX_K = 128  # wider: `merge` sorts (its counting costs candidates x k)
_SCREEN32_MAX = 2.0**50  # largest |feature| screened in float32: far from float32 overflow in any product or sum


class _Scratch:
    """One thread's working matrices for `_screen`, reused from chunk to chunk.

    A chunk's matrix is about 32 MiB, just over the size from which glibc maps fresh memory for each allocation, so
    without reuse every chunk faulted in new pages for the kernel to zero (page clearing was an eighth of a first
    epoch's CPU time, these matrices a large part of it); reused, a 2,000 x 300,000 search took 1.08 s, not 1.39 s.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, np.dtype], np.ndarray] = {}

    def matrix(self, what: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        size = shape[0] * shape[1]
        key = (what, np.dtype(dtype))
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = self._buffers[key] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def _screen(xq2: np.ndarray, nq: np.ndarray, chunk: np.ndarray, kth: np.ndarray, k: int,
            scratch: _Scratch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(query, chunk row) pairs that may beat the k-th distance `kth` (inf: fewer than k held), a superset.

    `xq2` is -2 x the queries (exact, in the screening precision), so one product and one add give |r|^2 - 2 q.r,
    the approximate distance less |q|^2 (its error: see _bound). `scratch` lends the working matrices.
    """
    d = chunk.shape[1]
    low = xq2.dtype == np.float32
    ref = chunk.astype(np.float32) if low else chunk
    nr = _norms(ref)
    shape = (xq2.shape[0], ref.shape[0])
    scratch = scratch or _Scratch()
    part = np.matmul(xq2, ref.T, out=scratch.matrix("part", shape, xq2.dtype))
    part += nr[None, :]
    top = float(nr.max()) if nr.size else 0.0
    bound = _bound(d, nq, top, low)
    if k and chunk.shape[0] and np.isinf(kth).any():
        # A query holding fewer than k rows: this chunk's own k nearest all lie within 2 bounds of its k-th
        # approximate distance (k rows lie at or below it, each within a bound of its canonical distance).
        kk = min(k, chunk.shape[0])
        kth = np.minimum(kth, np.partition(part, kk - 1, axis=1)[:, kk - 1] + nq + 2.0 * bound)
    # A row can enter only if its approximate distance is within a bound of the k-th (canonical) distance.
    hit = np.less_equal(part, (kth + bound - nq).astype(part.dtype)[:, None], out=scratch.matrix("hit", shape, bool))
    # Row-major positions of the hits: flatnonzero on a flat bool array is about 10x faster than np.nonzero on the
    # 2-D matrix, which was half of a first epoch's neighbour search.
    flat = np.flatnonzero(hit)
    return flat // chunk.shape[0], flat % chunk.shape[0]


def nearest_k(xq: np.ndarray, xr: np.ndarray, k: int, *, into: Nearest | None = None, offset: int = 0,
              ids: np.ndarray | None = None, max_chunk_bytes: int = MAX_CHUNK_BYTES, workers: int | None = None,
              screen32: bool = True, limit: np.ndarray | None = None) -> Nearest:
    """The k nearest rows of `xr` to each row of `xq`, exactly by (canonical distance, index).

    With `into`, the reference rows extend what it already holds (their indices start at `offset`): the same result
    as one call over all reference rows together, as long as the offsets ascend. `ids` (ascending) names the
    reference rows instead of offset + position. With `limit` (per query), only reference rows whose canonical
    squared distance is below it are kept (the k nearest of those; fewer where fewer lie that close), and the
    screening starts from it, so a tight limit costs one product and one compare per pair. Chunks are screened on
    `workers` threads (default: every core) against the k-th distances held when their batch starts; a stale
    threshold only lets more pairs through to the exact check, so the result never depends on the thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rewards.valuation import _default_workers, _single_threaded_blas

    xq = np.ascontiguousarray(xq, dtype=np.float64)
    n_query = xq.shape[0]
    out = Nearest.empty(n_query, k) if into is None else into
    if n_query == 0 or xr.shape[0] == 0:
        return out
    workers = workers or _default_workers(np)
    rows = max(1, int(max_chunk_bytes) // (8 * n_query * workers))
    # Screening precision: float32 halves the bytes each pair costs (the exact check is always float64); a chunk
    # with features too large for it is screened in float64.
    xq2_64 = -2.0 * xq
    low_ok = screen32 and float(np.abs(xq).max()) < _SCREEN32_MAX
    xq2_32 = xq2_64.astype(np.float32) if low_ok else None
    nq = _norms(xq)
    spans = [(lo, min(lo + rows, xr.shape[0])) for lo in range(0, xr.shape[0], rows)]
    below = None if limit is None else np.asarray(limit, dtype=np.float64).reshape(-1)
    assert below is None or below.size == n_query, "one limit per query row"

    local = threading.local()

    def one(span: tuple[int, int], kth: np.ndarray):
        chunk = np.ascontiguousarray(xr[span[0]:span[1]], dtype=np.float64)
        low = low_ok and (chunk.size == 0 or float(np.abs(chunk).max()) < _SCREEN32_MAX)
        if not hasattr(local, "scratch"):
            local.scratch = _Scratch()
        q, r = _screen(xq2_32 if low else xq2_64, nq, chunk, kth, k, local.scratch)
        dist = canonical_pairs(xq, chunk, q, r)
        if below is not None:
            ok = dist < below[q]
            q, r, dist = q[ok], r[ok], dist[ok]
        at = r + span[0]
        return q, dist, (ids[at] if ids is not None else at + offset)

    with _single_threaded_blas(np), ThreadPoolExecutor(max_workers=workers) as pool:
        for b in range(0, len(spans), workers):
            kth = out.dist[:, -1].copy() if below is None else np.minimum(out.dist[:, -1], below)
            for q, dist, idx in pool.map(lambda s: one(s, kth), spans[b:b + workers]):
                out.merge(q, dist, idx)
    return out


def pairs_within(xq: np.ndarray, xr: np.ndarray, limit: np.ndarray, *,
                 max_chunk_bytes: int = MAX_CHUNK_BYTES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query, reference) pair whose canonical squared distance is below the query's `limit` (inf: every
    pair), with that distance: screened by the matrix product within its bound (float32 where the features allow,
    as in nearest_k), then measured exactly."""
    xq = np.ascontiguousarray(xq, dtype=np.float64)
    nq = _norms(xq)
    xq2_64 = -2.0 * xq
    low_ok = xq.size == 0 or float(np.abs(xq).max()) < _SCREEN32_MAX
    xq2_32 = xq2_64.astype(np.float32) if low_ok else None
    rows = max(1, int(max_chunk_bytes) // (8 * max(xq.shape[0], 1)))
    qs, rs, ds = [], [], []
    scratch = _Scratch()
    for lo in range(0, xr.shape[0], rows):
        chunk = np.ascontiguousarray(xr[lo:lo + rows], dtype=np.float64)
        low = low_ok and (chunk.size == 0 or float(np.abs(chunk).max()) < _SCREEN32_MAX)
        q, r = _screen(xq2_32 if low else xq2_64, nq, chunk, limit, 0, scratch)
        dist = canonical_pairs(xq, chunk, q, r)
        keep = dist < limit[q]
        qs.append(q[keep])
        rs.append(r[keep] + lo)
        ds.append(dist[keep])
    if not qs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    return np.concatenate(qs), np.concatenate(rs), np.concatenate(ds)


def nearest_earlier(x: np.ndarray, rows: np.ndarray, eligible: np.ndarray, *, block: int = 512) -> np.ndarray:
    """For each listed row i (ascending), the canonical squared distance to its nearest eligible row j < i of `x`
    (inf where none): screened by the matrix product within its bound, then measured exactly."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.full(rows.size, np.inf)
    if rows.size == 0:
        return out
    d = x.shape[1]
    norms = _norms(x)
    top = float(norms.max()) if norms.size else 0.0
    ids = np.arange(x.shape[0])
    for lo in range(0, rows.size, block):
        sel = rows[lo:lo + block]
        upto = int(sel.max())  # only rows before the block's last row can be earlier
        ref = x[:upto]
        approx = (-2.0 * x[sel]) @ ref.T
        approx += norms[None, :upto]
        approx += norms[sel, None]
        bad = (ids[None, :upto] >= sel[:, None]) | ~eligible[None, :upto]
        approx[bad] = np.inf
        if upto == 0:
            continue
        best = approx.min(axis=1)
        bound = _bound(d, norms[sel], top)
        q, r = np.nonzero((approx <= (best + 2.0 * bound)[:, None]) & ~bad)
        if q.size == 0:
            continue
        dist = canonical_pairs(x, x, sel[q], r)
        res = np.full(sel.size, np.inf)
        np.minimum.at(res, q, dist)
        out[lo:lo + block] = res
    return out
