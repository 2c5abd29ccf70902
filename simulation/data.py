"""Rows for a simulated market, from scikit-learn's bundled datasets (load_* reads files shipped in the wheel).

The dataset is shuffled once by the scenario's seed and split: the first `holdout_fraction` becomes the operator's
hidden holdout, the rest is the supply of real rows that honest players draw from, each row handed out once. When the
supply runs out and the scenario allows it (`data.synthesize`, the default), new rows are drawn from a Gaussian fitted
to each class of the supply (its mean and covariance): fresh draws from a model of the data, near no row in
particular. (Interpolations between real rows would not do: they sit closer to the rows they came from than fresh
data does, which is exactly what the market's originality rule refuses to pay for.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine.errors import TributaryError

LABEL = "label"
SMOTE_NEIGHBOURS = 5  # an interpolation's partner is one of a row's 5 nearest same-class rows, as in SMOTE


class SimulationError(TributaryError):
    """The simulation cannot go on as the scenario asks (e.g. it needs more real rows than the dataset has)."""


@dataclass(frozen=True)
class Dataset:
    name: str
    features: tuple[str, ...]
    x: np.ndarray  # float64, rows x features
    y: np.ndarray  # int64 labels
    labels: tuple[int, ...]
    lo: np.ndarray  # per-feature min over the whole dataset
    hi: np.ndarray  # per-feature max
    std: np.ndarray  # per-feature standard deviation (1 where a feature is constant)


def load_dataset(name: str) -> Dataset:
    """One of scikit-learn's bundled datasets, with snake_case feature names."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "digits": datasets.load_digits, "iris": datasets.load_iris}[name]
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = [re.sub(r"[^a-z0-9]+", "_", str(n).lower()).strip("_") or f"f{i}" for i, n in enumerate(bunch.feature_names)]
    if len(set(names)) != len(names):
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    std = x.std(axis=0)
    return Dataset(name, tuple(names), x, y, tuple(int(v) for v in np.unique(y)), x.min(axis=0), x.max(axis=0),
                   np.where(std > 0, std, 1.0))


def to_table(ds: Dataset, x: np.ndarray, y: np.ndarray) -> pa.Table:
    cols = {f: pa.array(np.ascontiguousarray(x[:, i]), pa.float64()) for i, f in enumerate(ds.features)}
    cols[LABEL] = pa.array(np.asarray(y, dtype=np.int64), pa.int64())
    return pa.table(cols)


def from_table(ds: Dataset, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([table.column(f).to_numpy().astype(np.float64) for f in ds.features])
    return x, table.column(LABEL).to_numpy().astype(np.int64)


class RowSource:
    """The supply of fresh rows: real rows in a fixed shuffled order, each handed out once, then synthesized ones."""

    def __init__(self, ds: Dataset, holdout_fraction: float, seed: int, *, synthesize: bool):
        rng = np.random.default_rng([seed, 0x5EED, 1])
        order = rng.permutation(len(ds.y))
        n_holdout = max(1, int(round(len(ds.y) * holdout_fraction)))
        if n_holdout >= len(ds.y) - 2:
            raise SimulationError(f"data.holdout_fraction {holdout_fraction} leaves no rows for contributors")
        self.ds = ds
        self.holdout_index = order[:n_holdout]
        self.supply_index = order[n_holdout:]
        self.cursor = 0
        self.synthesized = 0
        self.synthesize = synthesize
        self._rng = np.random.default_rng([seed, 0x5EED, 2])  # the synthesis stream, drawn in request order
        ys = ds.y[self.supply_index]
        self._by_class = {c: self.supply_index[ys == c] for c in ds.labels if np.any(ys == c)}

    def holdout(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ds.x[self.holdout_index], self.ds.y[self.holdout_index]

    def take(self, n: int, who: str) -> tuple[np.ndarray, np.ndarray]:
        """n fresh rows: the next real ones, then (if allowed) drawn from the per-class Gaussians."""
        real = self.supply_index[self.cursor:self.cursor + n]
        self.cursor += len(real)
        x, y = self.ds.x[real], self.ds.y[real]
        missing = n - len(real)
        if missing:
            if not self.synthesize:
                raise SimulationError(
                    f"{who} needs {n} fresh rows but the {self.ds.name} supply ({len(self.supply_index)} rows after "
                    "the holdout) is used up: set data.synthesize = true, or fewer epochs, players or rows")
            sx, sy = self._interpolate(missing)
            x, y = np.vstack([x, sx]), np.concatenate([y, sy])
            self.synthesized += missing
        return x, y

    def _interpolate(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n rows from per-class Gaussians fitted to the supply (classes in proportion to their supply rows)."""
        classes = sorted(self._by_class)
        counts = np.array([len(self._by_class[c]) for c in classes], dtype=np.float64)
        picked = self._rng.choice(len(classes), size=n, p=counts / counts.sum())
        xs = np.empty((n, self.ds.x.shape[1]))
        ys = np.empty(n, dtype=np.int64)
        for ci in range(len(classes)):
            at = np.flatnonzero(picked == ci)
            if at.size == 0:
                continue
            mean, factor, lo, hi = self._class_model(classes[ci])
            # Clipped to the class's range in the supply, so a draw never breaks the task's declared bounds.
            xs[at] = np.clip(mean + self._rng.standard_normal((at.size, mean.size)) @ factor.T, lo, hi)
            ys[at] = classes[ci]
        return xs, ys

    def _class_model(self, c) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A class's supply mean, a Cholesky factor of its covariance (a small ridge keeps it positive) and its
        per-feature range."""
        rows = self.ds.x[self._by_class[c]]
        mean = rows.mean(axis=0)
        cov = np.cov(rows, rowvar=False) if rows.shape[0] > 1 else np.zeros((rows.shape[1], rows.shape[1]))
        cov = np.atleast_2d(cov)
        ridge = 1e-6 * max(float(np.trace(cov)) / max(cov.shape[0], 1), 1e-12)
        return mean, np.linalg.cholesky(cov + ridge * np.eye(cov.shape[0])), rows.min(axis=0), rows.max(axis=0)


def jitter(ds: Dataset, x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """x plus Gaussian noise of `scale` times each feature's std (kept inside the dataset's range)."""
    if scale == 0.0:
        return x.copy()
    noisy = x + rng.normal(0.0, 1.0, x.shape) * (scale * ds.std)[None, :]
    return np.clip(noisy, ds.lo, ds.hi)


def smote(ds: Dataset, x: np.ndarray, y: np.ndarray, per_row: int, rng: np.random.Generator,
          k: int = SMOTE_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """`per_row` same-class interpolations a + u (b - a), u ~ U(0, 1), for each row a of x (in row order), b one of
    a's k nearest rows of the same class in x (distance in feature stds). A row alone in its class repeats itself."""
    if per_row < 1 or not len(y):
        return np.empty((0, x.shape[1])), np.empty(0, dtype=np.int64)
    scaled = x / ds.std[None, :]
    partner = np.empty((len(y), per_row), dtype=np.int64)
    pick = rng.random((len(y), per_row))
    u = rng.random((len(y), per_row, 1))
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) == 1:
            partner[members] = members[0]
            continue
        d = ((scaled[members, None, :] - scaled[None, members, :]) ** 2).sum(axis=2)
        np.fill_diagonal(d, np.inf)
        near = members[np.argsort(d, axis=1, kind="stable")[:, :min(k, len(members) - 1)]]  # rows x k'
        partner[members] = np.take_along_axis(near, (pick[members] * near.shape[1]).astype(np.int64), axis=1)
    a = np.repeat(x[:, None, :], per_row, axis=1)
    out = a + u * (x[partner] - a)
    return out.reshape(-1, x.shape[1]), np.repeat(y, per_row)


def augment(ds: Dataset, x: np.ndarray, y: np.ndarray, per_row: int, mode: str, scale: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A self-augmenter's synthetic rows: `per_row` per own row, same-class interpolations or jittered copies."""
    if mode == "interpolate":
        return smote(ds, x, y, per_row, rng)
    return jitter(ds, np.repeat(x, per_row, axis=0), scale, rng), np.repeat(y, per_row)


def flip_labels(ds: Dataset, y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a `rate` share of labels (each row with that probability) by a different label, uniformly."""
    labels = np.asarray(ds.labels)
    out = y.copy()
    flip = rng.random(len(y)) < rate
    for i in np.flatnonzero(flip):
        others = labels[labels != y[i]]
        out[i] = others[rng.integers(len(others))]
    return out


def garbage(ds: Dataset, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random features uniform within each feature's range, random labels."""
    x = ds.lo[None, :] + rng.random((n, len(ds.features))) * (ds.hi - ds.lo)[None, :]
    return x, np.asarray(ds.labels)[rng.integers(len(ds.labels), size=n)]
