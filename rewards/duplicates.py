"""Exact-duplicate detection: a stable 64-bit hash per row, and which rows are first seen.

The hash is defined by bytes, not by Python's `hash`, so it is the same on every platform and in every process and
can be stored in the lake and the ledger.
"""

from __future__ import annotations

import hashlib
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
