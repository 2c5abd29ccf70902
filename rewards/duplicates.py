"""Duplicate detection: a stable 64-bit hash per row and which rows are first seen; and near duplicates.

The hash is defined by bytes, not by Python's `hash`, so it is the same on every platform and in every process and
can be stored in the lake and the ledger. `near_duplicate_of` catches copies that were jittered to dodge the hash:
rows within a tolerance, on scaled features, of a row accepted earlier. Whose earlier row it was does not matter: a
key re-sending its own old rows adds no more to the market than a stranger copying them.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Iterable

import numpy as np

# One canonical quiet NaN, so nulls read back as NaN hash the same whatever payload bits they carried.
_CANONICAL_NAN = np.frombuffer(bytes.fromhex("000000000000f87f"), dtype="<f8")[0]


def _label_bytes(labels: np.ndarray) -> list[bytes]:
    """Canonical bytes of each label: int64 little-endian for integers, UTF-8 for strings."""
    if labels.dtype.kind in "iub":
        return [v.tobytes() for v in labels.astype("<i8")]
    if labels.dtype.kind == "U":
        return [str(v).encode("utf-8") for v in labels]
    if labels.dtype.kind == "S":  # already bytes; taken as UTF-8
        return [bytes(v) for v in labels]
    out: list[bytes] = []
    for v in labels:  # object arrays (e.g. from pandas), element by element
        if isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, numbers.Integral):
            out.append(int(v).to_bytes(8, "little", signed=True))
        elif isinstance(v, float) and v.is_integer():
            out.append(int(v).to_bytes(8, "little", signed=True))
        else:
            raise TypeError(f"label {v!r} is neither an integer nor a string; labels must be int64 or string")
    return out


def row_hashes(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """BLAKE2b-64 (read as little-endian uint64) of each row's little-endian float64 feature bytes + label bytes.

    -0.0 is hashed as 0.0 and every NaN as the canonical quiet NaN, so equal-valued rows always collide.
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"features must be a 2-D array (rows x features), got shape {feats.shape}")
    labs = np.asarray(labels)
    if labs.dtype.kind == "f":
        if not (np.isfinite(labs).all() and (labs == np.round(labs)).all()):
            raise TypeError("float labels must be whole numbers; labels must be int64 or string")
        labs = labs.astype(np.int64)
    if labs.shape != (feats.shape[0],):
        raise ValueError(f"labels must be 1-D with one label per row ({feats.shape[0]}), got shape {labs.shape}")
    canon = np.where(feats == 0.0, 0.0, feats)  # -0.0 -> 0.0
    canon = np.where(np.isnan(canon), _CANONICAL_NAN, canon)
    rows = np.ascontiguousarray(canon, dtype="<f8").view(np.uint8).reshape(feats.shape[0], 8 * feats.shape[1])
    out = np.empty(feats.shape[0], dtype=np.uint64)
    for i, (row, lab) in enumerate(zip(rows, _label_bytes(labs), strict=True)):
        digest = hashlib.blake2b(row.tobytes() + lab, digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def first_seen_mask(hashes: np.ndarray, prior: np.ndarray | set | Iterable[int] | None) -> np.ndarray:
    """True where a row's hash is its first occurrence in `hashes` (in order) and not already in `prior`."""
    # Signed 64-bit copies (e.g. stored as BIGINT) wrap back to the same uint64 values.
    h = np.asarray(hashes).astype(np.uint64).reshape(-1)
    mask = np.zeros(h.shape[0], dtype=bool)
    if h.size == 0:
        return mask
    _, first = np.unique(h, return_index=True)  # index of the first occurrence of each distinct hash
    mask[first] = True
    if prior is not None:
        if isinstance(prior, np.ndarray):
            known = prior.astype(np.uint64, copy=False).reshape(-1)
        else:
            known = np.fromiter((int(v) % 2**64 for v in prior), dtype=np.uint64)
        if known.size:
            mask &= ~np.isin(h, known)
    return mask


def exact_duplicate_of(hashes: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Per new row, the earliest earlier row with the same hash: an index into `prior` (0..P-1), or P + i for the
    i-th new row; -1 where the hash is seen for the first time."""
    h = np.asarray(hashes).astype(np.uint64).reshape(-1)
    known = np.zeros(0, dtype=np.uint64) if prior is None else np.asarray(prior).astype(np.uint64).reshape(-1)
    both = np.concatenate([known, h])
    _, first, inverse = np.unique(both, return_index=True, return_inverse=True)
    source = first[inverse.reshape(-1)][known.size:]  # the first occurrence of each new row's hash
    own = np.arange(known.size, both.size)
    return np.where(source == own, -1, source).astype(np.int64)


# ------------------------------------------------------------------------------------------------ near duplicates

DEFAULT_NEAR_TOL = 1e-3
"""Default radius for near duplicates, on features standardized by the holdout (rewards.scaling, unit std).

Jitter of up to 1e-4 std on every feature moves a row by at most 1e-4 * sqrt(d): caught for d <= 100. Distinct
honest rows sit far farther apart: the closest distinct pair of scikit-learn's iris is 0.12 std apart, of wine 1.16,
of breast_cancer 1.01, of digits 0.94 (measured on the whole datasets)."""

# Random projections used to bucket rows; more makes buckets more selective at a small cost in probes.
_NEAR_PROJECTIONS = 8
# Bucket width in units of tol: a row within tol of a bucket edge also probes the bucket beside it, so wider
# buckets mean fewer extra probes (about 2 / _NEAR_CELL per projection) but more rows per bucket to verify.
_NEAR_CELL = 64.0
# A bucket holding more prior rows than this gets its identical prior rows collapsed (see _collapse_prior).
_NEAR_CROWD = 32
_NEAR_SEED = 0x7472696275746172  # fixed: the result never depends on it (every candidate is verified exactly)


def _features(x: object, what: str, d: int | None = None) -> np.ndarray:
    """A 2-D float64 feature array (an empty (0, d) array for None)."""
    if x is None:
        return np.zeros((0, d or 0), dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or (d is not None and arr.shape[1] != d):
        want = f" with {d} columns" if d is not None else ""
        raise ValueError(f"{what} must be a 2-D array (rows x features){want}, got shape {arr.shape}")
    return arr


def _collapse_prior(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Keep-mask over prior rows: among `rows`, keep only the earliest row of each distinct vector.

    For "which earliest row lies within tol", a later identical row is never the answer, so piles of identical lake
    rows cannot blow up the candidate pairs.
    """
    keep = np.ones(x.shape[0], dtype=bool)
    sub = np.ascontiguousarray(x[rows] + 0.0)  # -0.0 -> 0.0, so equal vectors have equal bytes
    _, first = np.unique(sub.view(np.dtype((np.void, sub.dtype.itemsize * sub.shape[1]))).reshape(-1),
                         return_index=True)
    keep[rows] = False
    keep[rows[first]] = True  # np.unique's index is the first occurrence; rows ascend, so the earliest row
    return keep


def _hash_cells(cells: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """One 63-bit hash per row of integer bucket coordinates (collisions only add candidates, all verified)."""
    h = cells[:, 0].astype(np.uint64) * mult[0]
    for j in range(1, cells.shape[1]):
        h += cells[:, j].astype(np.uint64) * mult[j]
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(1)).view(np.int64)


def _buckets(x: np.ndarray, w: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Bucket coordinates floor(p / width) of the projections p = x w, and where each p sits in its bucket (0..1)."""
    p = x @ w
    p /= width
    cells = np.floor(p)
    p -= cells
    return cells.astype(np.int64), p


def _candidate_pairs(x_prior: np.ndarray, x_new: np.ndarray, scale: np.ndarray, tol: float, *, crowd_check: bool
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(new row, reference) pairs that may lie within `tol`, a superset of all such pairs; references index the prior
    rows first, then the new rows (offset by len(x_prior)). With `crowd_check`, if some bucket holds more than
    _NEAR_CROWD prior rows, returns no pairs but the prior rows in such buckets (to collapse, then call again).

    Rows are bucketed on a grid over a few random unit projections of the scaled features (a projection never
    increases a distance), buckets at least 2 tol wide. A pair within tol differs by less than tol on every
    projection, so the new row finds the reference in its own bucket or, where it lies within tol of a bucket edge,
    across that edge. Buckets are joined by one sort of (bucket hash, id) keys packed into int64.
    """
    n_prior, d = x_prior.shape
    n_new = x_new.shape[0]
    if d <= _NEAR_PROJECTIONS:
        proj = np.eye(d)
    else:
        proj = np.random.default_rng(_NEAR_SEED).normal(size=(d, _NEAR_PROJECTIONS))
        proj /= np.linalg.norm(proj, axis=0, keepdims=True)
    w = proj / scale[:, None]  # projections of the scaled rows, without materializing them
    m = proj.shape[1]
    # Largest |scaled feature|, from per-column extremes (no full-size temporaries).
    zmax = max(float((np.maximum(a.max(axis=0), -a.min(axis=0)) / scale).max()) if a.size else 0.0
               for a in (x_prior, x_new))
    # Computed projections are off by at most (d + 3) u |z| |u| <= (d + 3) u sqrt(d) zmax, so a pair within tol
    # has computed projections closer than `reach`. |p| / width below 2^20 keeps bucket fractions exact to ~2^-33.
    reach = tol + 2.0 * (d + 3) * 2.0**-53 * math.sqrt(d) * zmax * 1.01
    width = max(_NEAR_CELL * tol, 2.0 * reach, math.sqrt(d) * zmax / 2.0**20)
    slack = reach / width + 2.0**-30
    mult = np.random.default_rng(_NEAR_SEED + 1).integers(1, 2**63, size=m, dtype=np.uint64) | np.uint64(1)
    c_prior, _ = _buckets(x_prior, w, width)
    c_new, frac = _buckets(x_new, w, width)
    # Probes: each new row's own bucket, plus the neighbour across every edge it is close to (all combinations).
    probe_row = np.arange(n_new)
    probe_cells = c_new
    for j in range(m):
        for step, near in ((-1, frac[:, j] < slack), (1, frac[:, j] > 1.0 - slack)):
            sel = near[probe_row]
            if sel.any():
                extra = probe_cells[sel]
                extra[:, j] += step
                probe_row = np.concatenate([probe_row, probe_row[sel]])
                probe_cells = np.concatenate([probe_cells, extra])
    del frac
    n_ref = n_prior + n_new
    total = n_ref + probe_row.size
    id_bits = max(1, (total - 1).bit_length())
    if id_bits > 40:
        raise ValueError("too many rows for one near-duplicate pass; split the batch")
    # Keys: bucket hash in the high bits, id in the low bits; references get the lower ids, so in each run of equal
    # hashes the references come first, then the probes.
    ids = np.arange(total, dtype=np.int64)
    keys = np.concatenate([_hash_cells(c_prior, mult), _hash_cells(c_new, mult), _hash_cells(probe_cells, mult)])
    del c_prior, c_new, probe_cells
    keys >>= id_bits - 1
    keys <<= id_bits
    keys |= ids
    keys.sort()
    sid = keys & ((1 << id_bits) - 1)
    keys >>= id_bits
    start = np.ones(total, dtype=bool)
    start[1:] = keys[1:] != keys[:-1]
    del keys
    run_first = np.flatnonzero(start)
    run = np.cumsum(start) - 1
    del start
    is_ref = sid < n_ref
    refs_in_run = np.add.reduceat(is_ref, run_first) if total else np.zeros(0, dtype=np.int64)
    prior_in_run = np.add.reduceat(sid < n_prior, run_first) if total else np.zeros(0, dtype=np.int64)
    if crowd_check and int(prior_in_run.max(initial=0)) > _NEAR_CROWD:
        crowded = np.repeat(prior_in_run > _NEAR_CROWD, np.diff(np.append(run_first, total)))
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, sid[crowded & (sid < n_prior)]
    probe_pos = np.flatnonzero(~is_ref)
    del is_ref
    counts = refs_in_run[run[probe_pos]]
    hit = counts > 0
    probe_pos, counts = probe_pos[hit], counts[hit]
    pairs = int(counts.sum())
    if pairs == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, None
    first = run_first[run[probe_pos]]
    offset = np.arange(pairs) - np.repeat(np.cumsum(counts) - counts, counts)
    ref = sid[np.repeat(first, counts) + offset]
    new_row = probe_row[np.repeat(sid[probe_pos] - n_ref, counts)]
    return new_row, ref, None


def near_duplicate_of(
    x_new: np.ndarray,
    x_prior: np.ndarray | None = None,
    scale: np.ndarray | float | None = None,
    tol: float = DEFAULT_NEAR_TOL,
    *,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Per new row, the earliest earlier row within `tol`: an index into `x_prior` (0..P-1), or P + i for the i-th
    new row; -1 where there is none.

    Distance is Euclidean on features divided by `scale` (per feature; None = 1). Earlier rows are every prior row
    (what the lake holds) and every earlier new row that is not itself a duplicate; `candidates` (bool per new row,
    default all) leaves out new rows already known to be duplicates (exact copies): they are neither judged nor
    matched. Whose row it was does not matter. Rows with a NaN feature are never near duplicates and match nothing
    (the exact row hash still catches their copies). About O(n log n), no n x n matrix: bucketed random projections
    give candidate pairs, and each is verified exactly.
    """
    x = _features(x_new, "x_new")
    n, d = x.shape
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    s = np.ones(d) if scale is None else np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("scale must be positive and finite for every feature (see rewards.scaling)")
    xp_ = _features(x_prior, "x_prior", d)
    n_prior = xp_.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    judged = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).reshape(-1)
    if judged.shape != (n,):
        raise ValueError(f"candidates has {judged.shape[0]} entries for {n} rows")
    judged = judged & np.isfinite(x).all(axis=1)
    prior_rows = np.flatnonzero(np.isfinite(xp_).all(axis=1))
    new_rows = np.flatnonzero(judged)
    if new_rows.size == 0:
        return out
    found = _near_duplicates(x[new_rows], xp_[prior_rows], s, float(tol), collapse=True)
    hit = found >= 0
    # Back from the compacted rows (finite prior rows, then judged new rows) to the caller's indices.
    out[new_rows[hit]] = np.concatenate([prior_rows, n_prior + new_rows])[found[hit]]
    return out


def near_duplicate_mask(
    x_new: np.ndarray,
    x_prior: np.ndarray | None = None,
    scale: np.ndarray | float | None = None,
    tol: float = DEFAULT_NEAR_TOL,
) -> np.ndarray:
    """True where a new row is a near duplicate of an earlier row (see `near_duplicate_of`)."""
    return near_duplicate_of(x_new, x_prior, scale, tol) >= 0


def _near_duplicates(x: np.ndarray, xp_: np.ndarray, s: np.ndarray, tol: float, *, collapse: bool) -> np.ndarray:
    """near_duplicate_of on finite rows: the earliest accepted reference within tol (prior first, then new), or -1."""
    n, n_prior = x.shape[0], xp_.shape[0]
    q, r, crowded = _candidate_pairs(xp_, x, s, tol, crowd_check=collapse)
    if crowded is not None:
        keep = _collapse_prior(xp_, np.unique(crowded))
        found = _near_duplicates(x, xp_[keep], s, tol, collapse=False)
        index = np.concatenate([np.flatnonzero(keep), n_prior + np.arange(n)])  # collapsed index -> this call's
        return np.where(found >= 0, index[np.maximum(found, 0)], -1)
    # A reference is a prior row or an earlier new row (never the row itself or a later one).
    from_prior = r < n_prior
    keep = from_prior | (r - n_prior < q)
    q, r, from_prior = q[keep], r[keep], from_prior[keep]
    diff = np.empty((q.size, x.shape[1]))
    diff[from_prior] = xp_[r[from_prior]]
    diff[~from_prior] = x[r[~from_prior] - n_prior]
    np.subtract(x[q], diff, out=diff)
    diff /= s
    near = np.einsum("ij,ij->i", diff, diff) < tol * tol
    q, r, from_prior = q[near], r[near], from_prior[near]
    source = np.full(n, -1, dtype=np.int64)
    # Any prior row within tol settles it: the earliest one is the source.
    if from_prior.any():
        qp, rp = q[from_prior], r[from_prior]
        order = np.lexsort((rp, qp))
        qp, rp = qp[order], rp[order]
        first = np.ones(qp.size, dtype=bool)
        first[1:] = qp[1:] != qp[:-1]
        source[qp[first]] = rp[first]
    # Earlier new rows count only if they were accepted themselves; in arrival order, so each is final when used.
    qi, ri = q[~from_prior], r[~from_prior] - n_prior
    if qi.size:
        order = np.lexsort((ri, qi))
        src = source.tolist()
        for a, b in zip(qi[order].tolist(), ri[order].tolist()):  # ascending a, then b; b < a: src[b] is final
            if src[a] < 0 and src[b] < 0:
                src[a] = n_prior + b
        source = np.asarray(src, dtype=np.int64)
    return source
