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
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import tomli_w

from quality.errors import TaskError
from rewards.scaling import SCALINGS

FEATURE_DTYPES = ("float64", "int64")
LABEL_DTYPES = ("int64", "string")
VALUATION_METHODS = ("knn_shapley",)
_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}

PROFILE_QUANTILES = (0.01, 0.5, 0.99)  # stored as q01, q50, q99 with the holdout's min and max
PROFILE_MARGIN = 10.0  # "far": more than this many profile spans beyond [q01, q99] (about an order of magnitude)
PROFILE_UNIT_SPAN = 1.0  # the span of a feature that is constant 0 in the holdout (no scale to learn from)
ALL_FEATURES = "*"  # task_from_holdout bounds key that declares the same bounds for every feature


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


# --- reading ---------------------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one TOML table, raising TaskError that names the file and the dotted key."""

    def __init__(self, file: str, data: dict, prefix: str = ""):
        self.file, self.data, self.prefix = file, data, prefix

    def fail(self, key: str, problem: str) -> TaskError:
        full = f"{self.prefix}{key}"
        return TaskError(f"{self.file}: key '{full}': {problem}", file=self.file, key=full)

    def get(self, key: str, kinds: tuple[type, ...], what: str, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, f"missing (expected {what})")
            return default
        value = self.data[key]
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):  # bool is an int subclass
            raise self.fail(key, f"expected {what}, got {value!r}")
        return value

    def number(self, key: str, default: Any = ...) -> Any:
        """A finite number as float (inf and nan are refused wherever a number is read), or the default."""
        value = self.get(key, (int, float), "a number", default)
        if value is default and key not in self.data:
            return default
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        return float(value)

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _check_bounds(lo: float | None, hi: float | None, fail) -> None:
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


def _parse_feature(file: str, index: int, raw: Any) -> Feature:
    """One [[features]] entry; min and max are the operator's declared bounds, both optional."""
    if not isinstance(raw, dict):
        raise _Reader(file, {}).fail(f"features[{index}]", f"expected a table with name, dtype (min, max); got {raw!r}")
    r = _Reader(file, raw, f"features[{index}].")
    r.reject_unknown({"name", "dtype", "min", "max"})
    name = r.get("name", (str,), "a column name")
    if not name:
        raise r.fail("name", "must not be empty")
    dtype = r.get("dtype", (str,), f"one of {', '.join(FEATURE_DTYPES)}")
    if dtype not in FEATURE_DTYPES:
        raise r.fail("dtype", f"expected one of {', '.join(FEATURE_DTYPES)}, got {dtype!r}")
    lo, hi = r.number("min", None), r.number("max", None)
    _check_bounds(lo, hi, r.fail)
    return Feature(name=name, dtype=dtype, min=lo, max=hi)


PROFILE_KEYS = ("q01", "q50", "q99", "min", "max")


def _parse_profile(file: str, raw: dict, names: set[str]) -> tuple[FeatureProfile, ...]:
    """The [profile] table: one inline table of quantiles per feature, ordered min <= q01 <= q50 <= q99 <= max."""
    out = []
    top = _Reader(file, raw, "profile.")
    for name, entry in raw.items():
        if name not in names:
            raise top.fail(name, "not a feature of this task")
        if not isinstance(entry, dict):
            raise top.fail(name, f"expected a table with {', '.join(PROFILE_KEYS)}; got {entry!r}")
        r = _Reader(file, entry, f"profile.{name}.")
        r.reject_unknown(set(PROFILE_KEYS))
        vals = [r.number(k) for k in PROFILE_KEYS]
        lo, q01, q50, q99, hi = vals[3], vals[0], vals[1], vals[2], vals[4]
        if not lo <= q01 <= q50 <= q99 <= hi:
            raise top.fail(name, "must satisfy min <= q01 <= q50 <= q99 <= max")
        out.append(FeatureProfile(name, q01, q50, q99, lo, hi))
    return tuple(out)


def _parse_task(file: str, data: dict) -> Task:
    """Build and check a Task from a parsed TOML document."""
    r = _Reader(file, data)
    r.reject_unknown({"name", "label", "label_dtype", "label_domain", "min_rows", "max_rows", "max_null_fraction",
                      "holdout", "valuation", "features", "challenge", "challenge_labels", "profile",
                      "reject_suspicious"})
    name = r.get("name", (str,), "the task name")
    if not name:
        raise r.fail("name", "must not be empty")
    label = r.get("label", (str,), "the label column name")
    if not label:
        raise r.fail("label", "must not be empty")
    label_dtype = r.get("label_dtype", (str,), f"one of {', '.join(LABEL_DTYPES)}")
    if label_dtype not in LABEL_DTYPES:
        raise r.fail("label_dtype", f"expected one of {', '.join(LABEL_DTYPES)}, got {label_dtype!r}")
    domain = r.get("label_domain", (list,), "a list of allowed label values")
    item_type, item_what = (int, "integers") if label_dtype == "int64" else (str, "strings")
    if not domain:
        raise r.fail("label_domain", "must list at least one label value")
    bad = [v for v in domain if isinstance(v, bool) or not isinstance(v, item_type)]
    if bad:
        raise r.fail("label_domain", f"label_dtype is {label_dtype}, so values must be {item_what}; got {bad[0]!r}")
    if len(set(domain)) != len(domain):
        raise r.fail("label_domain", "has duplicate values")

    min_rows = r.get("min_rows", (int,), "a whole number", 10)
    max_rows = r.get("max_rows", (int,), "a whole number", 1_000_000)
    if min_rows < 1:
        raise r.fail("min_rows", f"must be >= 1 (a submission needs rows), got {min_rows}")
    if max_rows < min_rows:
        raise r.fail("max_rows", f"max_rows {max_rows} is below min_rows {min_rows}")
    max_null = r.number("max_null_fraction", 0.0)
    if max_null != 0.0:
        raise r.fail("max_null_fraction", f"must be 0.0, got {max_null}: features must be non-null, since a null "
                                          "cannot be valued; drop or impute such rows before submitting")
    reject_suspicious = r.get("reject_suspicious", (bool,), "true or false", False)
    holdout = r.get("holdout", (str,), "a path to the holdout Parquet", "")
    challenge = r.get("challenge", (str,), "a path to the public challenge Parquet", "")
    challenge_labels = r.get("challenge_labels", (str,), "a path to the hidden challenge labels Parquet", "")
    if bool(challenge) != bool(challenge_labels):
        raise r.fail("challenge_labels" if challenge else "challenge", "challenge and challenge_labels go together")

    raw_val = r.get("valuation", (dict,), "a table with method and k", {})
    v = _Reader(file, raw_val, "valuation.")
    v.reject_unknown({"method", "k", "near_duplicate_tol", "scaling"})
    method = v.get("method", (str,), f"one of {', '.join(VALUATION_METHODS)}", "knn_shapley")
    if method not in VALUATION_METHODS:
        raise v.fail("method", f"expected one of {', '.join(VALUATION_METHODS)}, got {method!r}")
    k = v.get("k", (int,), "a whole number", 5)
    if k < 1:
        raise v.fail("k", f"must be >= 1, got {k}")
    near_tol = v.number("near_duplicate_tol", Task.near_duplicate_tol)
    if not near_tol > 0:
        raise v.fail("near_duplicate_tol", f"must be > 0, got {near_tol}")
    scaling = v.get("scaling", (str,), f"one of {', '.join(SCALINGS)}", "standard")
    if scaling not in SCALINGS:
        raise v.fail("scaling", f"expected one of {', '.join(SCALINGS)}, got {scaling!r}")

    raw_features = r.get("features", (list,), "a list of [[features]] tables")
    if not raw_features:
        raise r.fail("features", "must list at least one feature")
    features = tuple(_parse_feature(file, i, f) for i, f in enumerate(raw_features))
    seen: set[str] = set()
    for i, f in enumerate(features):
        if f.name in seen or f.name == label:
            raise r.fail(f"features[{i}].name", f"column {f.name!r} appears twice (features and label must be unique)")
        seen.add(f.name)
    profile = _parse_profile(file, r.get("profile", (dict,), "a table of feature profiles", {}), seen)

    return Task(name=name, features=features, label=label, label_dtype=label_dtype, label_domain=tuple(domain),
                min_rows=min_rows, max_rows=max_rows, holdout=holdout, valuation=method, k=k,
                near_duplicate_tol=near_tol, scaling=scaling, challenge=challenge, challenge_labels=challenge_labels,
                profile=profile, reject_suspicious=reject_suspicious)
def load_task(path: Path) -> Task:
    """Read and check one task file; TaskError names the file and the offending key."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise TaskError(f"{path}: no such task file", file=str(path)) from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not a readable TOML file: {e}", file=str(path)) from None
    return _parse_task(str(path), data)


def load_tasks(tasks_dir: Path) -> dict[str, Task]:
    """Every `tasks/*.toml`, keyed by task name (TaskError on a bad file or a name used twice)."""
    tasks: dict[str, Task] = {}
    origin: dict[str, Path] = {}
    for path in sorted(Path(tasks_dir).glob("*.toml")):
        task = load_task(path)
        if task.name in tasks:
            raise TaskError(f"{path}: key 'name': task {task.name!r} is already defined in {origin[task.name]}",
                            file=str(path), key="name")
        tasks[task.name], origin[task.name] = task, path
    return tasks




# --- writing ---------------------------------------------------------------------------------------------------


def task_to_dict(task: Task) -> dict:
    """The TOML document for a task, in the layout load_task reads (the profile included as a nested table)."""
    def feature(f: Feature) -> dict:
        out: dict = {"name": f.name, "dtype": f.dtype}
        if f.min is not None:
            out["min"] = float(f.min)
        if f.max is not None:
            out["max"] = float(f.max)
        return out

    doc = {
        "name": task.name,
        "label": task.label,
        "label_dtype": task.label_dtype,
        "label_domain": list(task.label_domain),
        "min_rows": task.min_rows,
        "max_rows": task.max_rows,
        "reject_suspicious": task.reject_suspicious,
        "holdout": task.holdout,
        **({"challenge": task.challenge, "challenge_labels": task.challenge_labels} if task.challenge else {}),
        "features": [feature(f) for f in task.features],
        "valuation": {"method": task.valuation, "k": task.k, "near_duplicate_tol": float(task.near_duplicate_tol),
                      "scaling": task.scaling},
    }
    if task.profile:
        doc["profile"] = {p.name: {k: float(getattr(p, k)) for k in PROFILE_KEYS} for p in task.profile}
    return doc


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_key(name: str) -> str:
    return name if _BARE_KEY.match(name) else tomli_w.dumps({name: 0}).split(" = ")[0]


def write_task(task: Task, path: Path) -> None:
    """Write a task file that load_task reads back to an equal Task; the profile is one inline table per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = task_to_dict(task)
    profile = doc.pop("profile", None)
    text = f"# Tributary task {task.name!r}\n" + tomli_w.dumps(doc)
    if profile:
        text += ("\n# learned from the holdout: only flags 'suspicious' submissions (see quality.task.PROFILE_MARGIN)"
                 "\n[profile]\n")
        for name, q in profile.items():
            inner = ", ".join(f"{k} = {float(v)!r}" for k, v in q.items())
            text += f"{_toml_key(name)} = {{ {inner} }}\n"
    path.write_text(text, encoding="utf-8")


# --- deriving a task from its holdout ------------------------------------------------------------------------


def _feature_dtype(name: str, t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    raise TaskError(f"holdout column {name!r} has type {t}; features must be numeric", key=name)


def _integral(col: pa.ChunkedArray) -> bool:
    """Whether every non-null value of a float column is a whole number (so labels like 3.0 become int64)."""
    values = pc.drop_null(col)
    whole = pc.and_(pc.is_finite(values), pc.equal(values, pc.floor(values)))
    return len(values) > 0 and pc.all(whole).as_py() is True


def _read_holdout(holdout: Any) -> tuple[pa.Table, str]:
    """The holdout as a table, with a name for messages; a path is read as Parquet."""
    if isinstance(holdout, pa.Table):
        return holdout, "holdout"
    import pyarrow.parquet as pq

    try:
        return pq.read_table(Path(holdout)), str(holdout)
    except (OSError, pa.ArrowException) as e:
        raise TaskError(f"{holdout}: cannot read the holdout Parquet: {e}", file=str(holdout)) from None


def profile_column(name: str, col: pa.ChunkedArray) -> FeatureProfile | None:
    """Quantiles of one holdout column over its finite values (None when it has none)."""
    values = col.cast(pa.float64())
    values = pc.filter(values, pc.is_finite(values))
    if len(values) == 0:
        return None
    qs = pc.quantile(values, q=list(PROFILE_QUANTILES), interpolation="linear").to_pylist()
    mm = pc.min_max(values)
    return FeatureProfile(name, *(float(q) for q in qs), float(mm["min"].as_py()), float(mm["max"].as_py()))


def check_holdout(table: pa.Table, label: str, where: str) -> None:
    """Every row is valued against the holdout, so each of its features must be finite and non-null, and each row
    must have a label: TaskError naming the column, the count and the rule (a constant column is fine)."""
    n = table.num_rows
    for col_name in table.column_names:
        col = table.column(col_name)
        what = "label column" if col_name == label else "column"
        rule = ("every holdout row needs a label" if col_name == label else
                "holdout features must be finite and non-null, since every submission is valued against them")
        if col.null_count:
            raise TaskError(f"{where}: {what} {col_name!r}: {col.null_count} of {n} values are null; {rule}",
                            file=where, key=col_name)
        if pa.types.is_floating(col.type):
            bad = n - pc.sum(pc.is_finite(col).cast(pa.int64())).as_py()
            if bad:
                raise TaskError(f"{where}: {what} {col_name!r}: {bad} of {n} values are NaN or infinite; {rule}",
                                file=where, key=col_name)


def task_from_holdout(name: str, holdout: Path | pa.Table, label: str, *, extra_labels: Iterable = (),
                      bounds: Mapping[str, tuple[float, float]] = {}, holdout_ref: str | None = None) -> Task:
    """A task with only what the holdout can prove: columns, types, the labels seen (plus extra_labels) and a profile.

    Every non-label column is a feature. Bounds are declared only where the operator passes them (key "*" for every
    feature, a column name for one); nothing learned from the sample rejects a submission.
    """
    table, where = _read_holdout(holdout)
    if label not in table.column_names:
        raise TaskError(f"{where}: no label column {label!r}; columns are {', '.join(table.column_names)}",
                        file=where, key="label")
    if table.num_rows == 0:
        raise TaskError(f"{where}: the holdout has no rows", file=where)
    for col_name in table.column_names:  # types first: a string feature is named as such, not as non-finite
        if col_name != label:
            _feature_dtype(col_name, table.column(col_name).type)
    check_holdout(table, label, where)
    unknown = [k for k in bounds if k != ALL_FEATURES and (k not in table.column_names or k == label)]
    if unknown:
        raise TaskError(f"bounds for {unknown[0]!r}: not a feature of the holdout {where}", key=unknown[0])

    features, profile = [], []
    for col_name in table.column_names:
        if col_name == label:
            continue
        col = table.column(col_name)
        dtype = _feature_dtype(col_name, col.type)
        p = profile_column(col_name, col)
        if p is None:
            raise TaskError(f"{where}: column {col_name!r} has no finite values", file=where, key=col_name)
        lo, hi = bounds.get(col_name, bounds.get(ALL_FEATURES, (None, None)))
        lo, hi = (None if lo is None else float(lo)), (None if hi is None else float(hi))

        def fail(key: str, problem: str, _c: str = col_name) -> TaskError:
            return TaskError(f"bounds for {_c!r}: {key}: {problem}", key=_c)

        _check_bounds(lo, hi, fail)
        features.append(Feature(name=col_name, dtype=dtype, min=lo, max=hi))
        profile.append(p)
    if not features:
        raise TaskError(f"{where}: no feature columns besides the label {label!r}", file=where)

    lab = table.column(label)
    if pa.types.is_integer(lab.type) or (pa.types.is_floating(lab.type) and _integral(lab)):
        label_dtype, lab, kind = "int64", lab.cast(pa.int64()), int
    else:
        label_dtype, lab, kind = "string", lab.cast(pa.string()), str
    domain = {v for v in pc.unique(lab).to_pylist() if v is not None}
    for v in extra_labels:
        try:
            domain.add(kind(v) if kind is str or not isinstance(v, str) else int(v.strip()))
        except ValueError:
            raise TaskError(f"extra label {v!r}: the label column is {label_dtype}") from None
    return Task(name=name, features=tuple(features), label=label, label_dtype=label_dtype, label_domain=tuple(domain),
                holdout=holdout_ref if holdout_ref is not None else (str(holdout) if where != "holdout" else ""),
                profile=tuple(profile))
