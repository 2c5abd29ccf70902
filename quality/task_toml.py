"""Task files: `tasks/<name>.toml` read (tomllib) into a checked Task, and a Task written back (tomli_w).

The layout is the one quality.task describes; every error is a TaskError naming the file and the dotted key.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from quality.errors import TaskError
from quality.task import FEATURE_DTYPES, LABEL_DTYPES, VALUATION_METHODS, Feature, FeatureProfile, Task, check_bounds
from rewards.scaling import SCALINGS


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
    check_bounds(lo, hi, r.fail)
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
