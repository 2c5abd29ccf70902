"""A task derived from its holdout: the columns, types and labels it shows, and the learned profile that only flags;
and the checks every holdout must pass (finite, non-null features; a label on every row)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quality.errors import TaskError
from quality.task import PROFILE_QUANTILES, Feature, FeatureProfile, Task, check_bounds

ALL_FEATURES = "*"  # task_from_holdout bounds key that declares the same bounds for every feature


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

        check_bounds(lo, hi, fail)
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
