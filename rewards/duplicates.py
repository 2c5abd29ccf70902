"""Duplicate detection: a stable 64-bit hash per row and which rows are first seen; and near duplicates.

The hash is defined by bytes, not by Python's `hash`, so it is the same on every platform and in every process and
can be stored in the lake and the ledger. `near_duplicate_of` catches copies that were jittered to dodge the hash:
rows within a tolerance, on scaled features, of a row accepted earlier. Whose earlier row it was does not matter: a
key re-sending its own old rows adds no more to the market than a stranger copying them. `NearIndex` gives the same
answers against a lake kept across epochs: extended with each epoch's rows, never rebuilt, so a check costs what the
new rows cost.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocol.files import write_atomic

_BLAKE2B_64_STATE = hashlib.blake2b(digest_size=8)  # never updated: copied for each row
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
    n, d = feats.shape
    if labs.dtype.kind in "iub":
        return _fixed_width_hashes([feats[:, j] for j in range(d)], labs)
    canon = np.where(feats == 0.0, 0.0, feats)  # -0.0 -> 0.0
    canon = np.where(np.isnan(canon), _CANONICAL_NAN, canon)
    rows = np.ascontiguousarray(canon, dtype="<f8").view(np.uint8).reshape(n, 8 * d)
    return _hash_each([row.tobytes() + lab for row, lab in zip(rows, _label_bytes(labs), strict=True)])


def column_row_hashes(columns: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """`row_hashes` of the rows the 1-D feature `columns` make with integer `labels`, without stacking a matrix
    first (as a table holds them): the same hashes as `row_hashes(np.column_stack(columns), labels)`."""
    labs = np.asarray(labels)
    if labs.dtype.kind not in "iub" or labs.ndim != 1:
        raise TypeError(f"column_row_hashes takes 1-D integer labels, got {labs.dtype} of shape {labs.shape}")
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if any(c.shape != labs.shape for c in cols):
        raise ValueError(f"every feature column must be 1-D with one value per label ({labs.shape[0]})")
    return _fixed_width_hashes(cols, labs)


def _fixed_width_hashes(columns: list[np.ndarray], labs: np.ndarray) -> np.ndarray:
    """Rows of float64 features and an integer label in one buffer (n x (d + 1) 8-byte words), hashed slice by
    slice."""
    n, d = labs.shape[0], len(columns)
    words = np.empty((n, d + 1), dtype="<f8")
    for j, column in enumerate(columns):
        np.add(column, 0.0, out=words[:, j])  # IEEE: -0.0 + 0.0 is +0.0, so -0.0 hashes as 0.0
    nan = np.isnan(words[:, :d])
    if nan.any():
        words[:, :d][nan] = _CANONICAL_NAN
    words.view("<i8")[:, d] = labs
    data, step = words.tobytes(), 8 * (d + 1)
    return _hash_each(data[i:i + step] for i in range(0, n * step, step))


def _hash_each(rows: Iterable[bytes]) -> np.ndarray:
    """BLAKE2b-64 of each byte string, as uint64 (little-endian). Copying a state made once is about 1.5x faster
    than constructing one per row (the constructor parses its keyword parameters and builds the parameter block)."""
    fresh, out = _BLAKE2B_64_STATE.copy, []
    keep = out.append
    for row in rows:
        h = fresh()
        h.update(row)
        keep(h.digest())
    return np.frombuffer(b"".join(out), dtype="<u8").astype(np.uint64)


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
# Bucket positions |p| / width stay below this, so the fraction of a bucket a row sits at is exact to ~2^-33.
_NEAR_MAX_CELLS = 2.0**20
# Added to the edge slack (in bucket fractions) to cover the rounding of those fractions.
_NEAR_FRAC_SLACK = 2.0**-30
_UNIT_ROUNDOFF = 2.0**-53


def _features(x: object, what: str, d: int | None = None) -> np.ndarray:
    """A 2-D float64 feature array (an empty (0, d) array for None)."""
    if x is None:
        return np.zeros((0, d or 0), dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or (d is not None and arr.shape[1] != d):
        want = f" with {d} columns" if d is not None else ""
        raise ValueError(f"{what} must be a 2-D array (rows x features){want}, got shape {arr.shape}")
    return arr


def _checked_tol(tol: object) -> float:
    """The radius as a float, or ValueError unless it is positive and finite."""
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    return float(tol)


def _checked_scale(scale: np.ndarray | float | None, d: int) -> np.ndarray:
    """Per-feature scale as a fresh (d,) float64 array (None = 1), or ValueError unless positive and finite."""
    s = np.ones(d) if scale is None else np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,)).copy()
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValueError("scale must be positive and finite for every feature (see rewards.scaling)")
    return s


def _judged_rows(x: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
    """Indices of the new rows to judge: those in `candidates` (default all) whose features are all finite."""
    n = x.shape[0]
    judged = np.ones(n, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool).reshape(-1)
    if judged.shape != (n,):
        raise ValueError(f"candidates has {judged.shape[0]} entries for {n} rows")
    return np.flatnonzero(judged & np.isfinite(x).all(axis=1))


def _collapse_prior(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Keep-mask over prior rows: among `rows`, keep only the earliest row of each distinct vector.

    For "which earliest row lies within tol", a later identical row is never the answer, so piles of identical lake
    rows cannot blow up the candidate pairs.
    """
    keep = np.ones(x.shape[0], dtype=bool)
    first = _first_of_each_vector(x[rows])
    keep[rows] = False
    keep[rows[first]] = True  # np.unique's index is the first occurrence; rows ascend, so the earliest row
    return keep


def _first_of_each_vector(rows: np.ndarray) -> np.ndarray:
    """Position of the first occurrence of each distinct row vector (-0.0 and 0.0 count as equal)."""
    sub = np.ascontiguousarray(rows + 0.0)  # -0.0 -> 0.0, so equal vectors have equal bytes
    _, first = np.unique(sub.view(np.dtype((np.void, sub.dtype.itemsize * sub.shape[1]))).reshape(-1),
                         return_index=True)
    return first


def _projections(d: int) -> np.ndarray:
    """(d, m) unit projections to bucket on: the coordinates themselves for d <= _NEAR_PROJECTIONS, else random."""
    if d <= _NEAR_PROJECTIONS:
        return np.eye(d)
    proj = np.random.default_rng(_NEAR_SEED).normal(size=(d, _NEAR_PROJECTIONS))
    proj /= np.linalg.norm(proj, axis=0, keepdims=True)
    return proj


def _hash_multipliers(m: int) -> np.ndarray:
    """(m,) odd 64-bit multipliers that mix m bucket coordinates into one hash."""
    return np.random.default_rng(_NEAR_SEED + 1).integers(1, 2**63, size=m, dtype=np.uint64) | np.uint64(1)


def _zmax(x: np.ndarray, s: np.ndarray) -> float:
    """Largest |scaled feature| of `x`, from per-column extremes (no full-size temporaries); 0 for no rows."""
    if x.size == 0:
        return 0.0
    return float((np.maximum(x.max(axis=0), -x.min(axis=0)) / s).max())


def _reach(d: int, tol: float, zmax: float) -> float:
    """How far apart the computed projections of a pair within `tol` can be, for rows with |scaled feature| <= zmax.

    Computed projections are off by at most (d + 3) u |z| |u| <= (d + 3) u sqrt(d) zmax (u: unit roundoff).
    """
    return tol + 2.0 * (d + 3) * _UNIT_ROUNDOFF * math.sqrt(d) * zmax * 1.01


def _bucket_width(d: int, tol: float, zmax: float) -> float:
    """Smallest safe bucket width: at least 2 reach (so only adjacent buckets need probing) and wide enough that
    |p| / width stays below _NEAR_MAX_CELLS (exact bucket fractions)."""
    return max(_NEAR_CELL * tol, 2.0 * _reach(d, tol, zmax), math.sqrt(d) * zmax / _NEAR_MAX_CELLS)


def _buckets(x: np.ndarray, w: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Bucket coordinates floor(p / width) of the projections p = x w, and where each p sits in its bucket (0..1)."""
    p = x @ w
    p /= width
    cells = np.floor(p)
    p -= cells
    return cells.astype(np.int64), p


def _hash_cells(cells: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """One 63-bit hash per row of integer bucket coordinates (collisions only add candidates, all verified)."""
    h = cells[:, 0].astype(np.uint64) * mult[0]
    for j in range(1, cells.shape[1]):
        h += cells[:, j].astype(np.uint64) * mult[j]
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(1)).view(np.int64)


def _probe_cells(cells: np.ndarray, frac: np.ndarray, slack: float) -> tuple[np.ndarray, np.ndarray]:
    """(row, bucket coordinates) of every probe: each row's own bucket, plus the neighbour across every edge it is
    within `slack` (a bucket fraction) of, in all combinations."""
    probe_row = np.arange(cells.shape[0])
    probe_cells = cells
    for j in range(cells.shape[1]):
        for step, near in ((-1, frac[:, j] < slack), (1, frac[:, j] > 1.0 - slack)):
            sel = near[probe_row]
            if sel.any():
                extra = probe_cells[sel]
                extra[:, j] += step
                probe_row = np.concatenate([probe_row, probe_row[sel]])
                probe_cells = np.concatenate([probe_cells, extra])
    return probe_row, probe_cells


def _ranges(start: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Concatenated aranges start[i] .. start[i] + count[i] - 1: the positions of many slices at once."""
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(start - (np.cumsum(count) - count), count) + np.arange(total)


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
    proj = _projections(d)
    w = proj / scale[:, None]  # projections of the scaled rows, without materializing them
    zmax = max(_zmax(x_prior, scale), _zmax(x_new, scale))
    width = _bucket_width(d, tol, zmax)
    slack = _reach(d, tol, zmax) / width + _NEAR_FRAC_SLACK
    mult = _hash_multipliers(proj.shape[1])
    c_prior, _ = _buckets(x_prior, w, width)
    c_new, frac = _buckets(x_new, w, width)
    # Probes: each new row's own bucket, plus the neighbour across every edge it is close to (all combinations).
    probe_row, probe_cells = _probe_cells(c_new, frac, slack)
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
    ref = sid[_ranges(first, counts)]
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
    give candidate pairs, and each is verified exactly. Against a large lake checked epoch after epoch, NearIndex
    gives the same answers at the cost of the new rows only.
    """
    x = _features(x_new, "x_new")
    n, d = x.shape
    tol = _checked_tol(tol)
    s = _checked_scale(scale, d)
    xp_ = _features(x_prior, "x_prior", d)
    n_prior = xp_.shape[0]
    out = np.full(n, -1, dtype=np.int64)
    new_rows = _judged_rows(x, candidates)
    prior_rows = np.flatnonzero(np.isfinite(xp_).all(axis=1))
    if new_rows.size == 0:
        return out
    found = _near_duplicates(x[new_rows], xp_[prior_rows], s, tol, collapse=True)
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
    return _earliest_sources(x, q, r, n_prior, lambda rows: xp_[rows], s, tol)


def _earliest_sources(x: np.ndarray, q: np.ndarray, r: np.ndarray, n_prior: int,
                      prior_rows: Callable[[np.ndarray], np.ndarray], s: np.ndarray, tol: float) -> np.ndarray:
    """Verify candidate pairs exactly and pick each new row's source: the earliest prior row within tol, else the
    earliest earlier accepted new row (as n_prior + i), else -1.

    (q, r): new row of `x`, reference (a prior row id below n_prior, or n_prior + a row of `x`); `prior_rows` gives
    the features of prior rows by id. Shared by near_duplicate_of and NearIndex so both verify pairs identically.
    """
    n = x.shape[0]
    # A reference is a prior row or an earlier new row (never the row itself or a later one).
    from_prior = r < n_prior
    keep = from_prior | (r - n_prior < q)
    q, r, from_prior = q[keep], r[keep], from_prior[keep]
    diff = np.empty((q.size, x.shape[1]))
    diff[from_prior] = prior_rows(r[from_prior])
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


# ------------------------------------------------------------------------------------------ a persistent index

# A persistent index fixes its bucket grid at build, for rows up to this many times the largest |scaled feature|
# seen then (further where that costs nothing); a larger row added later re-buckets the whole index, once.
_INDEX_HEADROOM = 16.0
# Relative margin over rounding where magnitudes are bounded (a few units of roundoff would do).
_MAGNITUDE_MARGIN = 2.0**-40
# Largest sqrt(d) * |scaled feature| a grid accepts: projections and bucket widths stay far from overflow.
_INDEX_MAX_EXTENT = 2.0**1000
# Prior rows bucketed per step at build and when re-bucketing, bounding the temporaries.
_INDEX_CHUNK_ROWS = 1 << 18
# Feature blocks are merged up to this size: few blocks to gather from, and no copy of the whole lake on extend.
_INDEX_BLOCK_BYTES = 1 << 28
# Written into every saved index; an index saved with other bucketing (projections, hash, layout) is refused.
_INDEX_FORMAT = "tributary.near-index.v1"


@dataclass(frozen=True)
class _Grid:
    """A fixed bucket grid, valid for every row whose largest |scaled feature| is at most `zlimit`."""

    w: np.ndarray  # (d, m) projections divided by the scale
    mult: np.ndarray  # (m,) hash multipliers
    width: float  # bucket width on the projections
    slack: float  # a row this close to a bucket edge (as a bucket fraction) also probes the bucket beside it
    zlimit: float


def _rounding_per_z(d: int) -> float:
    """Rounding part of _reach per unit of |scaled feature|."""
    return 2.0 * (d + 3) * _UNIT_ROUNDOFF * math.sqrt(d) * 1.01


def _grid_covers(zlimit: float, zseen: float, tol: float) -> bool:
    """Whether a grid valid up to zlimit serves prior rows up to zseen: beyond zseen + tol (with a margin over
    rounding), so that a new row past zlimit provably has no prior row within tol and needs no probe."""
    return zlimit >= (zseen + tol) * (1.0 + _MAGNITUDE_MARGIN)


def _index_zlimit(d: int, tol: float, zseen: float) -> float:
    """Magnitude a persistent grid is built for: headroom over the prior rows seen (zseen), and at least as far as
    the narrowest grid (width _NEAR_CELL tol, reach at most 2 tol) is valid anyway."""
    free = min(_NEAR_CELL * tol * _NEAR_MAX_CELLS, tol / _rounding_per_z(d), _INDEX_MAX_EXTENT / 2.0) / math.sqrt(d)
    return max(_INDEX_HEADROOM * zseen, free, (zseen + tol) * (1.0 + 2.0 * _MAGNITUDE_MARGIN))


def _index_grid(proj: np.ndarray, mult: np.ndarray, s: np.ndarray, tol: float, zlimit: float,
                width: float | None = None) -> _Grid:
    """The grid valid up to zlimit: the narrowest safe width (or a stored `width`, checked to be safe)."""
    d = proj.shape[0]
    need = _bucket_width(d, tol, zlimit)
    if not (math.isfinite(need) and math.sqrt(d) * zlimit <= _INDEX_MAX_EXTENT):
        raise ValueError("scaled features or tol too large for a near-duplicate index (beyond ~1e300)")
    width = need if width is None else width
    if not width >= need:
        raise ValueError(f"bucket width {width!r} is too narrow for rows up to {zlimit!r}")
    slack = (tol + _rounding_per_z(d) * zlimit) / width + _NEAR_FRAC_SLACK
    return _Grid(proj / s[:, None], mult, float(width), slack, float(zlimit))


def _finite_zmax(x: np.ndarray, s: np.ndarray) -> float:
    """Largest |scaled feature| over the rows of `x` whose features are all finite, a chunk at a time."""
    z = 0.0
    for a in range(0, x.shape[0], _INDEX_CHUNK_ROWS):
        chunk = x[a:a + _INDEX_CHUNK_ROWS]
        ok = np.isfinite(chunk).all(axis=1)
        z = max(z, _zmax(chunk if ok.all() else chunk[ok], s))
    return z


class NearIndex:
    """Near-duplicate index over prior rows: their bucket keys kept sorted, so new rows are probed by binary search.

    `query` answers exactly as near_duplicate_of(x_new, x_prior_all, scale, tol), x_prior_all being every row given
    to build and extend in order, at the cost of the new rows (binary searches), never a sort of the prior rows.
    It holds a float64 copy of the prior rows (candidate pairs are verified exactly on them) and 16 bytes per
    bucketed row (bucket hash, row id). Both grow by appending: the rows in blocks, the keys in sorted runs, and
    blocks and runs are merged as they grow (a log-structured merge), so extending by k rows costs amortized
    O(k log N) and never copies or re-sorts the whole lake. The grid is fixed at build; a row too large for it
    re-buckets the index once (extend) or provably matches no prior row (query). Not thread-safe: one writer, no
    readers during extend.
    """

    def __init__(self, *, blocks: list[np.ndarray], d: int, s: np.ndarray, tol: float, proj: np.ndarray,
                 mult: np.ndarray, grid: _Grid, zseen: float, runs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Private: use NearIndex.build or NearIndex.load."""
        self._blocks: list[np.ndarray] = []  # (rows, d) float64, owned: every prior row in order, NaN rows included
        self._starts: list[int] = []  # first prior index of each block
        self._n = 0
        self._d = d
        self._s = s
        self._tol = tol
        self._proj = proj
        self._mult = mult
        self._grid = grid
        self._zseen = zseen  # largest |scaled feature| over the finite prior rows
        self._runs = runs  # sorted (bucket hash, row id) runs; sizes shrink along the list, later rows later
        for block in blocks:
            self._append_block(block)

    # ------------------------------------------------------------------------------------------------ public API

    @classmethod
    def build(cls, x_prior: np.ndarray, scale: np.ndarray | float | None, tol: float) -> NearIndex:
        """An index over `x_prior` (rows x features) with distance on features divided by `scale` and radius `tol`.

        O(N log N): one sort of the prior rows' bucket keys; the grid is fixed here, from the rows' magnitude.
        """
        x = np.array(_features(x_prior, "x_prior"), dtype=np.float64, order="C")  # a copy the index owns
        d = x.shape[1]
        if d == 0:
            raise ValueError("a near-duplicate index needs at least one feature")
        tol = _checked_tol(tol)
        s = _checked_scale(scale, d)
        proj = _projections(d)
        mult = _hash_multipliers(proj.shape[1])
        zseen = _finite_zmax(x, s)
        grid = _index_grid(proj, mult, s, tol, _index_zlimit(d, tol, zseen))
        index = cls(blocks=[x], d=d, s=s, tol=tol, proj=proj, mult=mult, grid=grid, zseen=zseen, runs=[])
        index._add_run(*index._bucket_keys(x, 0))
        return index

    @property
    def n_prior(self) -> int:
        """How many prior rows the index holds (NaN rows included); the next extended row gets this index."""
        return self._n

    @property
    def n_features(self) -> int:
        """Columns per row."""
        return self._d

    @property
    def scale(self) -> np.ndarray:
        """The per-feature scale distances are measured on (a copy): an index is only valid for this scale."""
        return self._s.copy()

    @property
    def tol(self) -> float:
        """The radius: rows closer than this (on scaled features) are near duplicates."""
        return self._tol

    def prior_features(self) -> np.ndarray:
        """Every prior row, in order, as one (n_prior, d) array (a copy)."""
        return np.concatenate([np.zeros((0, self._d))] + self._blocks)

    def extend(self, x_rows: np.ndarray) -> None:
        """Append prior rows; they get the next prior indices (n_prior, n_prior + 1, ...).

        Costs what the new rows cost (amortized), unless a row is larger than the grid allows: then the whole index
        is re-bucketed on a wider grid, with headroom, so that happens rarely.
        """
        rows = np.array(_features(x_rows, "x_rows", self._d), dtype=np.float64, order="C")  # a copy the index owns
        if rows.shape[0] == 0:
            return
        first_id = self._n
        zseen = max(self._zseen, _finite_zmax(rows, self._s))
        regrid = not _grid_covers(self._grid.zlimit, zseen, self._tol)
        grid = _index_grid(self._proj, self._mult, self._s, self._tol,
                           _index_zlimit(self._d, self._tol, zseen)) if regrid else self._grid
        self._append_block(rows)
        self._zseen = zseen
        if regrid:
            self._grid, self._runs = grid, []
            keys, ids = zip(*(self._bucket_keys(block, start) for block, start in zip(self._blocks, self._starts)))
            self._add_run(np.concatenate(keys), np.concatenate(ids))
        else:
            self._add_run(*self._bucket_keys(rows, first_id))

    def query(self, x_new: np.ndarray, *, candidates: np.ndarray | None = None) -> np.ndarray:
        """Per new row, the earliest earlier row within tol: a prior index (0..n_prior-1), or n_prior + i for the
        i-th new row; -1 where there is none. Exactly near_duplicate_of against every prior row (see there for
        `candidates` and NaN rows); the index is not changed."""
        x = _features(x_new, "x_new", self._d)
        n_prior = self._n
        out = np.full(x.shape[0], -1, dtype=np.int64)
        new_rows = _judged_rows(x, candidates)
        if new_rows.size == 0:
            return out
        xn = x[new_rows]
        q_prior, r_prior = self._prior_pairs(xn)
        # Earlier new rows: one sort over the new rows only, as near_duplicate_of does.
        q_new, r_new, _ = _candidate_pairs(np.zeros((0, self._d)), xn, self._s, self._tol, crowd_check=False)
        found = _earliest_sources(xn, np.concatenate([q_prior, q_new]), np.concatenate([r_prior, n_prior + r_new]),
                                  n_prior, self._prior_rows, self._s, self._tol)
        hit = found >= 0
        src = found[hit]
        out[new_rows[hit]] = np.where(src < n_prior, src, n_prior + new_rows[np.maximum(src - n_prior, 0)])
        return out

    def save(self, path: Path) -> None:
        """Write the index to one .npz file (np.savez, no pickles), atomically (protocol.files.write_atomic)."""
        path = Path(path)
        empty = np.zeros(0, dtype=np.int64)
        arrays = {
            "format": np.array(_INDEX_FORMAT),
            "tol": np.float64(self._tol),
            "scale": self._s,
            "proj": self._proj,
            "mult": self._mult,
            "width": np.float64(self._grid.width),
            "zlimit": np.float64(self._grid.zlimit),
            "n_features": np.int64(self._d),
            "block_rows": np.array([block.shape[0] for block in self._blocks], dtype=np.int64),
            "keys": np.concatenate([empty] + [keys for keys, _ in self._runs]),
            "ids": np.concatenate([empty] + [ids for _, ids in self._runs]),
            "run_sizes": np.array([keys.size for keys, _ in self._runs], dtype=np.int64),
        }
        arrays.update({f"features_{i}": block for i, block in enumerate(self._blocks)})  # no copy of the lake
        # plain numeric and string arrays: nothing is pickled
        write_atomic(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: Path) -> NearIndex:
        """Read an index written by `save`; ValueError where the file is not a consistent index of this format."""
        fixed = ["format", "tol", "scale", "proj", "mult", "width", "zlimit", "n_features", "block_rows", "keys",
                 "ids", "run_sizes"]
        with np.load(Path(path), allow_pickle=False) as z:
            if not set(fixed) <= set(z.files) or str(z["format"]) != _INDEX_FORMAT:
                raise ValueError(f"{path} is not a near-duplicate index of format {_INDEX_FORMAT}")
            a = {name: z[name] for name in fixed}
            block_rows = a["block_rows"]
            names = [f"features_{i}" for i in range(block_rows.size)]
            if set(z.files) != set(fixed) | set(names):
                raise ValueError(f"{path}: inconsistent near-duplicate index members")
            blocks = [z[name] for name in names]
        d = int(a["n_features"])
        keys, ids, sizes, proj, mult = a["keys"], a["ids"], a["run_sizes"], a["proj"], a["mult"]
        n = int(block_rows.sum())
        consistent = (
            d > 0 and proj.dtype == np.float64 and proj.ndim == 2 and proj.shape[0] == d
            and mult.dtype == np.uint64 and mult.shape == (proj.shape[1],)
            and all(b.dtype == np.float64 and b.shape == (int(r), d) and r > 0
                    for b, r in zip(blocks, block_rows, strict=True))
            and keys.dtype == np.int64 and ids.dtype == np.int64 and keys.ndim == 1 and keys.shape == ids.shape
            and sizes.dtype == np.int64 and sizes.ndim == 1 and (sizes > 0).all() and int(sizes.sum()) == keys.size
            and (ids.size == 0 or (0 <= ids.min() and ids.max() < n)))
        if not consistent:
            raise ValueError(f"{path}: inconsistent near-duplicate index arrays")
        tol = _checked_tol(float(a["tol"]))
        s = _checked_scale(a["scale"], d)
        cuts = np.cumsum(sizes)[:-1]
        runs = list(zip(np.split(keys, cuts), np.split(ids, cuts), strict=True)) if sizes.size else []
        if any((k[1:] < k[:-1]).any() for k, _ in runs):
            raise ValueError(f"{path}: near-duplicate index keys are not sorted")
        zseen = max((_finite_zmax(block, s) for block in blocks), default=0.0)
        zlimit = float(a["zlimit"])
        if not _grid_covers(zlimit, zseen, tol):
            raise ValueError(f"{path}: near-duplicate index rows exceed its grid")
        grid = _index_grid(proj, mult, s, tol, zlimit, float(a["width"]))
        return cls(blocks=blocks, d=d, s=s, tol=tol, proj=proj, mult=mult, grid=grid, zseen=zseen, runs=runs)

    def save_keys(self, folder: Path) -> None:
        """Write the index without its prior rows' features into `folder` (.npy files a reader can memory-map, and
        index.json): for a caller that keeps those features itself (rewards.lake_view), so the lake is stored once."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        empty = np.zeros(0, dtype=np.int64)
        arrays = {"scale": self._s, "proj": self._proj, "mult": self._mult,
                  "keys": np.concatenate([empty] + [keys for keys, _ in self._runs]),
                  "ids": np.concatenate([empty] + [ids for _, ids in self._runs])}
        for name, arr in arrays.items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        meta = {"format": _INDEX_FORMAT, "tol": self._tol, "width": self._grid.width, "zlimit": self._grid.zlimit,
                "zseen": self._zseen, "n_features": self._d, "n_prior": self._n,
                "run_sizes": [int(keys.size) for keys, _ in self._runs]}
        (folder / "index.json").write_text(json.dumps(meta))

    @classmethod
    def load_keys(cls, folder: Path, features: np.ndarray, *, mmap: bool = False) -> NearIndex:
        """Read an index written by `save_keys`, over the caller's `features` (every prior row, in order; kept as
        given, so a memory-mapped array stays mapped). Checks shapes only (O(1)): the caller audits the contents.
        ValueError where the files are missing or do not fit."""
        import json

        folder = Path(folder)
        try:
            meta = json.loads((folder / "index.json").read_text())
            a = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                 for name in ("scale", "proj", "mult", "keys", "ids")}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{folder}: not a readable near-duplicate index ({exc})") from exc
        d, n, sizes = int(meta.get("n_features", 0)), int(meta.get("n_prior", -1)), meta.get("run_sizes", [])
        if (meta.get("format") != _INDEX_FORMAT or features.shape != (n, d) or features.dtype != np.float64
                or a["keys"].shape != a["ids"].shape or sum(sizes) != a["keys"].size or a["proj"].shape[0] != d):
            raise ValueError(f"{folder}: the index does not fit its {features.shape} prior rows")
        s = _checked_scale(np.array(a["scale"]), d)
        tol = _checked_tol(float(meta["tol"]))
        cuts = np.cumsum(sizes)[:-1]
        runs = list(zip(np.split(a["keys"], cuts), np.split(a["ids"], cuts), strict=True)) if sizes else []
        proj, mult = np.array(a["proj"]), np.array(a["mult"])
        grid = _index_grid(proj, mult, s, tol, float(meta["zlimit"]), float(meta["width"]))
        index = cls(blocks=[], d=d, s=s, tol=tol, proj=proj, mult=mult, grid=grid, zseen=float(meta["zseen"]),
                    runs=runs)
        if n:  # one block, as given (not merged, not copied)
            index._blocks, index._starts, index._n = [features], [0], n
        return index

    # ---------------------------------------------------------------------------------------------------- inside

    def _append_block(self, rows: np.ndarray) -> None:
        """Append owned rows as a block; merge trailing blocks while one is no larger than the block after it and
        the merged block stays under _INDEX_BLOCK_BYTES (so the lake is never copied whole)."""
        if rows.shape[0] == 0:
            return
        self._blocks.append(rows)
        self._starts.append(self._n)
        self._n += rows.shape[0]
        while (len(self._blocks) >= 2 and self._blocks[-2].shape[0] <= self._blocks[-1].shape[0]
               and self._blocks[-2].nbytes + self._blocks[-1].nbytes <= _INDEX_BLOCK_BYTES):
            last = self._blocks.pop()
            self._starts.pop()
            self._blocks[-1] = np.concatenate([self._blocks[-1], last])

    def _prior_rows(self, ids: np.ndarray) -> np.ndarray:
        """Features of prior rows by index (a copy), gathered block by block."""
        if len(self._blocks) == 1:
            return self._blocks[0][ids]
        out = np.empty((ids.size, self._d))
        which = np.searchsorted(np.asarray(self._starts), ids, side="right") - 1
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(len(self._blocks) + 1))
        for b in np.flatnonzero(np.diff(bounds)):
            at = order[bounds[b]:bounds[b + 1]]
            out[at] = self._blocks[b][ids[at] - self._starts[b]]
        return out

    def _bucket_keys(self, x: np.ndarray, first_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Bucket hashes and ids (first_id + position) of the rows of `x` whose features are all finite."""
        keys, ids = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        for a in range(0, x.shape[0], _INDEX_CHUNK_ROWS):
            chunk = x[a:a + _INDEX_CHUNK_ROWS]
            at = np.flatnonzero(np.isfinite(chunk).all(axis=1))
            cells, _ = _buckets(chunk if at.size == chunk.shape[0] else chunk[at], self._grid.w, self._grid.width)
            keys.append(_hash_cells(cells, self._grid.mult))
            ids.append(first_id + a + at)
        return np.concatenate(keys), np.concatenate(ids)

    def _add_run(self, keys: np.ndarray, ids: np.ndarray) -> None:
        """Sort new rows' (hash, id) pairs into a run, drop repeated rows from crowded buckets, merge runs as due."""
        order = np.argsort(keys, kind="stable")  # ids ascend within a bucket
        keys, ids = self._drop_repeated_rows(keys[order], ids[order])
        if keys.size == 0:
            return
        self._runs.append((keys, ids))
        # Merge while a run is no larger than the one after it: run sizes at least halve along the list, so there
        # are O(log N) runs and each row is moved O(log N) times in all.
        while len(self._runs) >= 2 and self._runs[-2][0].size <= self._runs[-1][0].size:
            new_keys, new_ids = self._runs.pop()
            old_keys, old_ids = self._runs.pop()
            at = np.searchsorted(old_keys, new_keys, side="right")  # after equal hashes: ids keep ascending
            self._runs.append((np.insert(old_keys, at, new_keys), np.insert(old_ids, at, new_ids)))

    def _drop_repeated_rows(self, keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leave out of a new (hash-sorted) run each row identical to an earlier bucketed row, in buckets that would
        hold more than _NEAR_CROWD rows: a later identical row is never the earliest row within tol, and piles of
        identical lake rows must not blow up the candidate pairs (as _collapse_prior does for near_duplicate_of)."""
        if keys.size == 0:
            return keys, ids
        start = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        count = np.diff(np.append(start, keys.size))
        total = count.copy()
        bounds = []
        for run_keys, _ in self._runs:
            lo = np.searchsorted(run_keys, keys[start], side="left")
            hi = np.searchsorted(run_keys, keys[start], side="right")
            bounds.append((lo, hi))
            total += hi - lo
        crowded = np.flatnonzero(total > _NEAR_CROWD)
        if crowded.size == 0:
            return keys, ids
        new_pos = _ranges(start[crowded], count[crowded])
        pool = [ids[new_pos]] + [run_ids[_ranges(lo[crowded], (hi - lo)[crowded])]
                                 for (_, run_ids), (lo, hi) in zip(self._runs, bounds, strict=True)]
        pool_ids = np.sort(np.concatenate(pool))  # ascending: the first of each vector is its earliest row
        earliest = pool_ids[_first_of_each_vector(self._prior_rows(pool_ids))]
        keep = np.ones(keys.size, dtype=bool)
        keep[new_pos] = np.isin(ids[new_pos], earliest)  # every dropped row's earliest copy stays bucketed
        return keys[keep], ids[keep]

    def _prior_pairs(self, xn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(new row, prior id) candidate pairs for finite new rows `xn`: a superset of the pairs within tol.

        Each new row probes its own bucket and the neighbours across edges it is within reach of; each probe finds
        its run of equal prior hashes by binary search in every sorted run.
        """
        empty = np.zeros(0, dtype=np.int64)
        if not self._runs:  # no prior rows (a task's first epoch): nothing to probe, and no pass over the new rows
            return empty, empty
        grid = self._grid
        # A row past the grid's limit is farther than tol from every prior row (see _grid_covers): nothing to probe.
        rows = np.flatnonzero((np.abs(xn) / self._s).max(axis=1) <= grid.zlimit)
        if rows.size == 0:
            return empty, empty
        cells, frac = _buckets(xn[rows], grid.w, grid.width)
        probe_row, probe_cells = _probe_cells(cells, frac, grid.slack)
        probe_hash = _hash_cells(probe_cells, grid.mult)
        order = np.argsort(probe_hash)  # ascending probes walk each run in order (better cache use)
        probe_hash, probe_row = probe_hash[order], rows[probe_row[order]]
        qs, rs = [empty], [empty]
        for keys, ids in self._runs:
            lo = np.searchsorted(keys, probe_hash, side="left")
            hit = lo < keys.size
            hit[hit] = keys[lo[hit]] == probe_hash[hit]
            at = np.flatnonzero(hit)
            if at.size == 0:
                continue
            count = np.searchsorted(keys, probe_hash[at], side="right") - lo[at]
            qs.append(np.repeat(probe_row[at], count))
            rs.append(ids[_ranges(lo[at], count)])
        return np.concatenate(qs), np.concatenate(rs)
