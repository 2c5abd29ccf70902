"""How features are scaled before distances: by the holdout's statistics, so no one column decides every neighbour.

`standard` (the default) divides each feature's offset from the holdout's mean by its standard deviation; `range`
maps the holdout's [min, max] to [0, 1]; `none` keeps raw values. A feature that is constant in the holdout keeps
unit scale (it still counts, unscaled). Near-duplicate tolerance is always judged on standardized features, whatever
the valuation's scaling, so one number means the same on every task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALINGS = ("standard", "range", "none")


@dataclass(frozen=True)
class Scaling:
    """(x - centre) / scale, per feature; both arrays are finite and scale is positive."""

    method: str
    centre: np.ndarray
    scale: np.ndarray

    def apply(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A rows x features array scaled (float64): a new array, or written into `out` (which may be `x` itself)."""
        out = np.subtract(np.asarray(x, dtype=np.float64), self.centre, out=out)
        out /= self.scale
        return out


def fit_scaling(holdout: np.ndarray, method: str = "standard") -> Scaling:
    """The scaling of `method` learned from the holdout's features (rows x features, finite)."""
    x = np.asarray(holdout, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"holdout features must be a 2-D array (rows x features), got shape {x.shape}")
    d = x.shape[1]
    if method not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}, got {method!r}")
    if x.shape[0] and not np.isfinite(x).all():
        raise ValueError("holdout features must be finite to learn a scaling from them")
    if method == "none" or x.shape[0] == 0:
        return Scaling(method, np.zeros(d), np.ones(d))
    if method == "standard":
        centre, width = x.mean(axis=0), x.std(axis=0)
    else:
        centre = x.min(axis=0)
        width = x.max(axis=0) - centre
    # A flat (or numerically flat) feature keeps unit scale: dividing by ~0 would blow its rounding noise up.
    flat = ~(np.isfinite(width) & (width > 1e-12 * np.maximum(1.0, np.abs(centre))))
    return Scaling(method, np.where(np.isfinite(centre), centre, 0.0), np.where(flat, 1.0, width))
