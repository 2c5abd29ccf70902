"""Task definitions: the hard rules a contribution must meet, the learned profile that only flags, and valuation.

A task lives in `tasks/<name>.toml` (read with tomllib, written with write_task) and looks like:

    name = "digits"
    label = "label"
    label_dtype = "int64"            # "int64" | "string"
    label_domain = [0, 1, 2]
    min_rows = 10
    max_rows = 1000000
    reject_suspicious = false        # true: a submission far outside the profile is rejected, not just flagged
    holdout = "holdout/digits.parquet"
    challenge = "challenges/digits.parquet"              # optional: public row_id + features for predictions
    challenge_labels = "holdout/digits-challenge.parquet" # optional: hidden row_id + label

    features = [
        { name = "px_0", dtype = "float64", min = 0.0, max = 16.0 },   # min/max: bounds the operator declares
        { name = "px_1", dtype = "float64" },                          # no declared bounds
    ]

    [valuation]
    method = "knn_shapley"
    k = 5
    scaling = "standard"            # distances on features scaled by the holdout: standard | range | none
    near_duplicate_tol = 1e-3       # this close to any earlier row (standardized features): a duplicate, earns 0

    [profile]                       # learned from the holdout; flags "suspicious", never rejects on its own
    px_0 = { q01 = 0.0, q50 = 0.0, q99 = 3.0, min = 0.0, max = 8.0 }

Hard rules (reject): the schema (columns, types), finite non-null features, min_rows..max_rows, the label domain and
declared bounds. A sample of the holdout cannot prove what honest data may contain, so what is learned from it (the
profile) only flags. `max_null_fraction` is still read but must be 0.0: features must be non-null.

The model is here; reading and writing task files is quality.task_toml (load_task, load_tasks, write_task), deriving
a task from its holdout is quality.holdout (task_from_holdout, check_holdout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from quality.errors import TaskError

FEATURE_DTYPES = ("float64", "int64")
LABEL_DTYPES = ("int64", "string")
VALUATION_METHODS = ("knn_shapley",)
_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}

PROFILE_QUANTILES = (0.01, 0.5, 0.99)  # stored as q01, q50, q99 with the holdout's min and max
PROFILE_MARGIN = 10.0  # "far": more than this many profile spans beyond [q01, q99] (about an order of magnitude)
PROFILE_UNIT_SPAN = 1.0  # the span of a feature that is constant 0 in the holdout (no scale to learn from)


@dataclass(frozen=True)
class Feature:
    """One feature column: its name, type and the bounds the operator declared (None: not declared)."""

    name: str
    dtype: str
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class FeatureProfile:
    """Quantiles of one feature in the holdout: what honest values usually look like (flags, never rejects)."""

    name: str
    q01: float
    q50: float
    q99: float
    min: float
    max: float

    def span(self) -> float:
        """The scale "far" is measured in: q99 - q01, at least the feature's magnitude (so a constant is not 0)."""
        span = max(self.q99 - self.q01, abs(self.q01), abs(self.q99))
        return span if span > 0 else PROFILE_UNIT_SPAN

    def band(self) -> tuple[float, float]:
        """Values outside this closed interval are far outside the profile (suspicious)."""
        pad = PROFILE_MARGIN * self.span()
        return min(self.min, self.q01 - pad), max(self.max, self.q99 + pad)


@dataclass(frozen=True)
class Task:
    """Everything that decides whether a contribution fits a task and how it is valued."""

    name: str
    features: tuple[Feature, ...]
    label: str
    label_dtype: str
    label_domain: tuple
    min_rows: int = 10
    max_rows: int = 1_000_000
    max_null_fraction: float = 0.0  # kept for old task files; must be 0.0 (features must be non-null)
    holdout: str = ""
    valuation: str = "knn_shapley"
    k: int = 5
    near_duplicate_tol: float = 1e-3  # distance (standardized features) under which an earlier row makes a duplicate
    scaling: str = "standard"  # how features are scaled by the holdout before distances (one of SCALINGS)
    challenge: str = ""  # public challenge rows (row_id + features); predictions are open when set
    challenge_labels: str = ""  # their hidden labels (row_id + label)
    profile: tuple[FeatureProfile, ...] = ()  # learned from the holdout; flags only
    reject_suspicious: bool = False  # whether a submission far outside the profile is rejected

    def __post_init__(self) -> None:
        # Accept lists for convenience; keep the value hashable and the domain sorted.
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "label_domain", tuple(sorted(self.label_domain)))
        object.__setattr__(self, "profile", tuple(self.profile))
        object.__setattr__(self, "_profiles", {p.name: p for p in self.profile})  # not a field: no effect on ==
        if self.max_null_fraction != 0.0:
            raise TaskError(f"task {self.name!r}: max_null_fraction must be 0.0: features must be non-null "
                            "(a null cannot be valued)", key="max_null_fraction")

    def columns(self) -> list[str]:
        """Canonical column order: the features, then the label."""
        return [*self.feature_names(), self.label]

    def feature_names(self) -> list[str]:
        """Feature column names in canonical order."""
        return [f.name for f in self.features]

    def prediction_columns(self) -> list[str]:
        """Columns of a predictions payload: row_id, then one probability column per label, p_<label>."""
        return ["row_id", *(f"p_{v}" for v in self.label_domain)]

    def arrow_schema(self) -> pa.Schema:
        """The canonical columns with their Arrow types."""
        fields = [pa.field(f.name, _ARROW_TYPES[f.dtype]) for f in self.features]
        return pa.schema([*fields, pa.field(self.label, _ARROW_TYPES[self.label_dtype])])

    def profile_of(self, name: str) -> FeatureProfile | None:
        """The learned profile of one feature, if the task has one."""
        return self._profiles.get(name)


def check_bounds(lo: float | None, hi: float | None, fail) -> None:
    """Declared bounds: finite, and min < max with a finite width when both are given (either may be left out);
    `fail(key, problem)` builds the error. An open (inf) or empty range would leave nothing to scale or judge by."""
    for key, v in (("min", lo), ("max", hi)):
        if v is not None and not math.isfinite(v):
            raise fail(key, f"expected a finite number, got {v!r} (declared bounds must be finite; leave the key "
                            "out for no bound)")
    if lo is not None and hi is not None:
        if not lo < hi:
            raise fail("max", f"max {hi!r} must be above min {lo!r} (declared bounds must have a positive width)")
        if not math.isfinite(hi - lo):
            raise fail("max", f"max - min overflows ({lo!r} .. {hi!r}); declared bounds must have a finite width")
