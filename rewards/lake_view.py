"""What valuing an epoch's rows against the lake needs, kept between epochs for one task and one test sample.

A LakeView holds the lake's distinct rows (first acceptances, in acceptance order), a sorted index of their row
hashes (exact duplicates), the near-duplicate index, and per test point its nearest lake rows by canonical distance
on the sample's scaling. Valuing new rows then costs what the new rows cost: nothing here is re-sorted per epoch.
`extend` folds a settled epoch's accepted rows in; the result is the same as building from all rows at once (the
neighbour order is exact, so the build order cannot change it). It is derived data: `engine.stages.lake_state`
keeps it in the home, and rebuilding it from the lake must give the same arrays (the audit checks).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewards.duplicates import DEFAULT_NEAR_TOL, NearIndex
from rewards.neighbours import Nearest, nearest_k
from rewards.originality import ORIGINALITY_NEIGHBOURS
from rewards.scaling import Scaling, fit_scaling

VIEW_FORMAT = "tributary-lake-view-1"
_ARRAYS = ("x_test", "y_test", "x", "y", "h", "origin", "hash_sorted", "hash_order", "nn_dist", "nn_index", "std",
           "centre", "scale")


def _label_array(a: object) -> np.ndarray:
    """Labels as a plain (non-object) 1-D array, so they can be saved without pickles: strings become str."""
    arr = np.asarray(a).reshape(-1)
    return arr.astype(str) if arr.dtype == object else arr


def sample_digest(x_test: np.ndarray, y_test: np.ndarray) -> str:
    """A digest of a test sample (features and labels), naming the view built for it."""
    h = hashlib.blake2b(digest_size=16)
    x = np.ascontiguousarray(np.asarray(x_test, dtype="<f8"))
    h.update(str(x.shape).encode())
    h.update(x.tobytes())
    h.update(np.asarray(y_test).astype(str).astype("U").tobytes())
    return h.hexdigest()


@dataclass
class LakeView:
    """The lake as one test sample's valuation sees it. Arrays grow by `extend`; nothing else mutates them."""

    k: int
    scaling: Scaling  # the valuation's scaling, learned from the sample
    std: np.ndarray  # near duplicates are judged on features standardized by the sample
    near_tol: float
    x_test: np.ndarray  # (T, d) the sample's features, scaled
    y_test: np.ndarray  # (T,) its labels
    x: np.ndarray  # (N, d) distinct lake rows' features as accepted (raw)
    y: np.ndarray  # (N,) their labels
    h: np.ndarray  # (N,) uint64 row hashes
    origin: np.ndarray  # (N,) int64: position of each distinct row among every row given to build/extend
    given: int  # rows given so far, repeats included
    hash_sorted: np.ndarray  # (N,) the hashes sorted ...
    hash_order: np.ndarray  # (N,) ... and the distinct row each one belongs to
    nearest: Nearest  # per test point its K nearest distinct lake rows (canonical, scaled)
    near: NearIndex  # over the distinct rows (its features are `x`, stored once on disk)
    digest: str = ""  # sample_digest of the sample it was built for
    folded: list[str] = field(default_factory=list)  # what was folded in, in order (the caller's names: submissions)

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def kth(self) -> np.ndarray:
        """Per test point the k-th nearest lake row's squared distance (inf: fewer than k rows)."""
        return self.nearest.dist[:, self.k - 1]

    @classmethod
    def build(cls, x_lake: np.ndarray, y_lake: np.ndarray, h_lake: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray, *, k: int = 5, scaling: str = "standard", near_tol: float = DEFAULT_NEAR_TOL,
              neighbours: int = ORIGINALITY_NEIGHBOURS) -> LakeView:
        """A view of the given lake rows (in acceptance order, repeats allowed) for this test sample."""
        xt = np.asarray(x_test, dtype=np.float64)
        yt = _label_array(y_test)
        s = fit_scaling(xt, scaling)
        std = fit_scaling(xt, "standard").scale
        d = xt.shape[1]
        view = cls(k=int(k), scaling=s, std=std, near_tol=float(near_tol), x_test=s.apply(xt), y_test=yt,
                   x=np.zeros((0, d)), y=_label_array(y_lake)[:0], h=np.zeros(0, dtype=np.uint64),
                   origin=np.zeros(0, dtype=np.int64), given=0, hash_sorted=np.zeros(0, dtype=np.uint64),
                   hash_order=np.zeros(0, dtype=np.int64), nearest=Nearest.empty(len(yt), max(int(k), neighbours)),
                   near=NearIndex.build(np.zeros((0, d)), std, float(near_tol)), digest=sample_digest(xt, yt))
        view.extend(x_lake, y_lake, h_lake)
        return view

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash, the distinct lake row holding it, or -1."""
        h = np.asarray(hashes).astype(np.uint64).reshape(-1)
        if self.hash_sorted.size == 0:
            return np.full(h.size, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.hash_sorted, h), self.hash_sorted.size - 1)
        return np.where(self.hash_sorted[pos] == h, self.hash_order[pos], -1)

    def extend(self, x_rows: np.ndarray, y_rows: np.ndarray, h_rows: np.ndarray) -> np.ndarray:
        """Fold accepted rows in (acceptance order); returns the mask of rows that were new distinct rows.

        Every distinct row joins the duplicate indexes, but a near duplicate of an earlier row (within the
        tolerance) does not join the test points' neighbours: it adds no information, so the lake the valuation
        sees is the same whoever re-sent what (a copier's choice of victim changes no one else's value).
        """
        x_rows = np.asarray(x_rows, dtype=np.float64)
        y_rows = _label_array(y_rows)
        h = np.asarray(h_rows).astype(np.uint64).reshape(-1)
        assert x_rows.shape[0] == y_rows.size == h.size, "one feature row, label and hash per row"
        _, first = np.unique(h, return_index=True)
        new = np.zeros(h.size, dtype=bool)
        new[first] = True
        new &= self.lookup(h) < 0
        rows = np.flatnonzero(new)
        n0 = self.n_rows
        if rows.size:
            distinct = self.near.query(x_rows[rows]) < 0
            keep = np.flatnonzero(distinct)
            nearest_k(self.x_test, self.scaling.apply(x_rows[rows[keep]]), self.nearest.k, into=self.nearest,
                      ids=n0 + keep)
            self.near.extend(x_rows[rows])
            self.x = np.concatenate([self.x, x_rows[rows]]) if n0 else x_rows[rows].copy()
            self.y = np.concatenate([self.y, y_rows[rows]]) if n0 else y_rows[rows].copy()
            self.h = np.concatenate([self.h, h[rows]])
            self.origin = np.concatenate([self.origin, self.given + rows])
            order = np.argsort(self.h, kind="stable")
            self.hash_sorted, self.hash_order = self.h[order], order.astype(np.int64)
        self.given += int(h.size)
        return new

    def near_duplicates(self, x_new: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Per new row the earliest distinct lake row (0..N-1) or earlier new row (N + i) within the tolerance."""
        return self.near.query(x_new, candidates=candidates)

    def scaled_rows(self, ids: np.ndarray) -> np.ndarray:
        """Distinct lake rows `ids`, on the valuation's scaling."""
        return self.scaling.apply(self.x[ids])

    def matches(self) -> tuple[np.ndarray, np.ndarray]:
        """Per test point and kept neighbour: does its label match the test point's, and is there a row at all."""
        present = self.nearest.index >= 0
        labels = self.y[np.maximum(self.nearest.index, 0)] if self.n_rows else np.zeros(self.nearest.index.shape)
        return (labels == self.y_test[:, None]) & present, present

    # ---------------------------------------------------------------------------------------------- persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"x_test": self.x_test, "y_test": self.y_test, "x": self.x, "y": self.y, "h": self.h,
                "origin": self.origin, "hash_sorted": self.hash_sorted, "hash_order": self.hash_order,
                "nn_dist": self.nearest.dist, "nn_index": self.nearest.index, "std": self.std,
                "centre": self.scaling.centre, "scale": self.scaling.scale}

    def save(self, folder: Path) -> None:
        """Write the view to `folder`: one .npy per array (so a reader can memory-map them) and view.json.

        Written into a fresh folder beside it (named for this process and thread, so two writers never share one),
        synced, then swapped in by renames: a crash leaves the old view, the new one, or none (then the next reader
        rebuilds it: derived data), never a mix.
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f".{folder.name}.new-{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shapes = {}
        for name, arr in self._arrays().items():
            _write(tmp / f"{name}.npy", lambda f, a=arr: np.save(f, np.ascontiguousarray(a), allow_pickle=False))
            shapes[name] = list(np.shape(arr))
        self.near.save_keys(tmp / "near")
        meta = {"format": VIEW_FORMAT, "k": self.k, "method": self.scaling.method, "near_tol": self.near_tol,
                "given": self.given, "digest": self.digest, "folded": self.folded, "shapes": shapes}
        _write(tmp / "view.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> LakeView:
        """Read a view written by `save` (with `mmap`, its big arrays memory-mapped read-only: an epoch then reads
        only the pages it touches); ValueError where it is missing, torn or of another format."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "view.json").read_text())
            if meta.get("format") != VIEW_FORMAT:
                raise ValueError(f"not a lake view of format {VIEW_FORMAT}")
            a = {name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                 for name in _ARRAYS}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{folder}: not a readable lake view ({exc})") from exc
        wrong = [n for n in _ARRAYS if list(a[n].shape) != meta["shapes"].get(n)]
        if wrong:
            raise ValueError(f"{folder}: {', '.join(wrong)} do not have the shapes view.json records")
        near = NearIndex.load_keys(folder / "near", a["x"], mmap=mmap)
        return cls(k=int(meta["k"]), scaling=Scaling(meta["method"], np.array(a["centre"]), np.array(a["scale"])),
                   std=np.array(a["std"]), near_tol=float(meta["near_tol"]), x_test=np.array(a["x_test"]),
                   y_test=np.array(a["y_test"]), x=a["x"], y=a["y"], h=a["h"], origin=a["origin"],
                   given=int(meta["given"]), hash_sorted=a["hash_sorted"], hash_order=a["hash_order"],
                   nearest=Nearest(np.array(a["nn_dist"]), np.array(a["nn_index"])), near=near,
                   digest=str(meta["digest"]), folded=list(meta["folded"]))

    def same_arrays(self, other: LakeView) -> list[str]:
        """Names of the arrays where two views differ (empty: the same state): how the audit compares a kept view
        with one rebuilt from the lake."""
        ours, theirs = self._arrays(), other._arrays()
        return [name for name in ours if np.shape(ours[name]) != np.shape(theirs[name])
                or not np.array_equal(ours[name], theirs[name])]


def _write(path: Path, write) -> None:
    """Write a file and sync it to disk."""
    with path.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
