"""Task definitions: the schema, ranges, row bounds and valuation settings a contribution is judged by.

A task lives in `tasks/<name>.toml` (read with tomllib, written with tomli_w) and looks like:

    name = "digits"
    label = "label"
    label_dtype = "int64"            # "int64" | "string"
    label_domain = [0, 1, 2]
    min_rows = 10
    max_rows = 1000000
    max_null_fraction = 0.0
    holdout = "holdout/digits.parquet"
    challenge = "challenges/digits.parquet"              # optional: public row_id + features for predictions
    challenge_labels = "holdout/digits-challenge.parquet" # optional: hidden row_id + label

    features = [
        { name = "px_0", dtype = "float64", min = -1.0, max = 1.0 },   # dtype "float64" | "int64"
    ]

    [valuation]
    method = "knn_shapley"
    k = 5
    near_duplicate_tol = 1e-5       # on features scaled by their range width

`[[features]]` tables work as well; write_task emits the inline form above, one feature per line.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import tomli_w

from quality.errors import TaskError

FEATURE_DTYPES = ("float64", "int64")
LABEL_DTYPES = ("int64", "string")
VALUATION_METHODS = ("knn_shapley",)
_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}


@dataclass(frozen=True)
class Feature:
    """One feature column: its name, type and the closed range its values must lie in."""

    name: str
    dtype: str
    min: float
    max: float


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
    max_null_fraction: float = 0.0
    holdout: str = ""
    valuation: str = "knn_shapley"
    k: int = 5
    near_duplicate_tol: float = 1e-5  # scaled distance under which another key's earlier row makes a row a duplicate
    challenge: str = ""  # public challenge rows (row_id + features); predictions are open when set
    challenge_labels: str = ""  # their hidden labels (row_id + label)

    def __post_init__(self) -> None:
        # Accept lists for convenience; keep the value hashable and the domain sorted.
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "label_domain", tuple(sorted(self.label_domain)))

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
        if isinstance(value, bool) or not isinstance(value, kinds):  # bool is an int subclass in Python
            raise self.fail(key, f"expected {what}, got {value!r}")
        return value

    def number(self, key: str, default: Any = ...) -> float:
        value = self.get(key, (int, float), "a number", default)
        if isinstance(value, float) and math.isnan(value):
            raise self.fail(key, "expected a number, got nan")
        return float(value)

    def reject_unknown(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise self.fail(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _parse_feature(file: str, index: int, raw: Any) -> Feature:
    """One [[features]] entry."""
    if not isinstance(raw, dict):
        raise _Reader(file, {}).fail(f"features[{index}]", f"expected a table with name, dtype, min, max; got {raw!r}")
    r = _Reader(file, raw, f"features[{index}].")
    r.reject_unknown({"name", "dtype", "min", "max"})
    name = r.get("name", (str,), "a column name")
    if not name:
        raise r.fail("name", "must not be empty")
    dtype = r.get("dtype", (str,), f"one of {', '.join(FEATURE_DTYPES)}")
    if dtype not in FEATURE_DTYPES:
        raise r.fail("dtype", f"expected one of {', '.join(FEATURE_DTYPES)}, got {dtype!r}")
    lo, hi = r.number("min"), r.number("max")
    if lo > hi:
        raise r.fail("max", f"max {hi} is below min {lo}")
    return Feature(name=name, dtype=dtype, min=lo, max=hi)


def _parse_task(file: str, data: dict) -> Task:
    """Build and check a Task from a parsed TOML document."""
    r = _Reader(file, data)
    r.reject_unknown({"name", "label", "label_dtype", "label_domain", "min_rows", "max_rows", "max_null_fraction",
                      "holdout", "valuation", "features", "challenge", "challenge_labels"})
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
    if min_rows < 0:
        raise r.fail("min_rows", f"must be >= 0, got {min_rows}")
    if max_rows < min_rows:
        raise r.fail("max_rows", f"max_rows {max_rows} is below min_rows {min_rows}")
    max_null = r.number("max_null_fraction", 0.0)
    if not 0.0 <= max_null <= 1.0:
        raise r.fail("max_null_fraction", f"must be between 0 and 1, got {max_null}")
    holdout = r.get("holdout", (str,), "a path to the holdout Parquet", "")
    challenge = r.get("challenge", (str,), "a path to the public challenge Parquet", "")
    challenge_labels = r.get("challenge_labels", (str,), "a path to the hidden challenge labels Parquet", "")
    if bool(challenge) != bool(challenge_labels):
        raise r.fail("challenge_labels" if challenge else "challenge", "challenge and challenge_labels go together")

    raw_val = r.get("valuation", (dict,), "a table with method and k", {})
    v = _Reader(file, raw_val, "valuation.")
    v.reject_unknown({"method", "k", "near_duplicate_tol"})
    method = v.get("method", (str,), f"one of {', '.join(VALUATION_METHODS)}", "knn_shapley")
    if method not in VALUATION_METHODS:
        raise v.fail("method", f"expected one of {', '.join(VALUATION_METHODS)}, got {method!r}")
    k = v.get("k", (int,), "a whole number", 5)
    if k < 1:
        raise v.fail("k", f"must be >= 1, got {k}")
    near_tol = v.number("near_duplicate_tol", 1e-5)
    if not near_tol > 0:
        raise v.fail("near_duplicate_tol", f"must be > 0, got {near_tol}")

    raw_features = r.get("features", (list,), "a list of [[features]] tables")
    if not raw_features:
        raise r.fail("features", "must list at least one feature")
    features = tuple(_parse_feature(file, i, f) for i, f in enumerate(raw_features))
    seen: set[str] = set()
    for i, f in enumerate(features):
        if f.name in seen or f.name == label:
            raise r.fail(f"features[{i}].name", f"column {f.name!r} appears twice (features and label must be unique)")
        seen.add(f.name)

    return Task(name=name, features=features, label=label, label_dtype=label_dtype, label_domain=tuple(domain),
                min_rows=min_rows, max_rows=max_rows, max_null_fraction=max_null, holdout=holdout,
                valuation=method, k=k, near_duplicate_tol=near_tol, challenge=challenge, challenge_labels=challenge_labels)


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
    """The TOML document for a task, in the layout load_task reads."""
    return {
        "name": task.name,
        "label": task.label,
        "label_dtype": task.label_dtype,
        "label_domain": list(task.label_domain),
        "min_rows": task.min_rows,
        "max_rows": task.max_rows,
        "max_null_fraction": float(task.max_null_fraction),
        "holdout": task.holdout,
        "valuation": {"method": task.valuation, "k": task.k, "near_duplicate_tol": float(task.near_duplicate_tol)},
        "features": [{"name": f.name, "dtype": f.dtype, "min": float(f.min), "max": float(f.max)}
                     for f in task.features],
        **({"challenge": task.challenge, "challenge_labels": task.challenge_labels} if task.challenge else {}),
    }


def write_task(task: Task, path: Path) -> None:
    """Write a task file that load_task reads back to an equal Task."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Tributary task {task.name!r}\n" + tomli_w.dumps(task_to_dict(task)), encoding="utf-8")


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


def task_from_holdout(name: str, holdout: Path, label: str, *, range_margin: float = 1.0,
                      holdout_ref: str | None = None) -> Task:
    """A task whose schema and ranges come from the holdout Parquet: every non-label column is a feature.

    Each feature's range is the holdout's [min, max] widened by range_margin * max(span, 1) on both sides, so
    honest data from the same distribution passes while values off by orders of magnitude do not.
    """
    import pyarrow.parquet as pq

    holdout = Path(holdout)
    try:
        table = pq.read_table(holdout)
    except (OSError, pa.ArrowException) as e:
        raise TaskError(f"{holdout}: cannot read the holdout Parquet: {e}", file=str(holdout)) from None
    if label not in table.column_names:
        raise TaskError(f"{holdout}: no label column {label!r}; columns are {', '.join(table.column_names)}",
                        file=str(holdout), key="label")
    if table.num_rows == 0:
        raise TaskError(f"{holdout}: the holdout has no rows", file=str(holdout))

    features = []
    for col_name in table.column_names:
        if col_name == label:
            continue
        col = table.column(col_name)
        dtype = _feature_dtype(col_name, col.type)
        mm = pc.min_max(col.cast(pa.float64()))
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo is None:
            raise TaskError(f"{holdout}: column {col_name!r} has no values", file=str(holdout), key=col_name)
        pad = range_margin * max(hi - lo, 1.0)
        lo, hi = lo - pad, hi + pad
        if dtype == "int64":  # integer columns get integer bounds; widening outward keeps every holdout value
            lo, hi = float(math.floor(lo)), float(math.ceil(hi))
        features.append(Feature(name=col_name, dtype=dtype, min=float(lo), max=float(hi)))
    if not features:
        raise TaskError(f"{holdout}: no feature columns besides the label {label!r}", file=str(holdout))

    lab = table.column(label)
    if pa.types.is_integer(lab.type) or (pa.types.is_floating(lab.type) and _integral(lab)):
        label_dtype, lab = "int64", lab.cast(pa.int64())
    else:
        label_dtype, lab = "string", lab.cast(pa.string())
    domain = tuple(v for v in pc.unique(lab).to_pylist() if v is not None)
    return Task(name=name, features=tuple(features), label=label, label_dtype=label_dtype, label_domain=domain,
                holdout=holdout_ref if holdout_ref is not None else str(holdout))
