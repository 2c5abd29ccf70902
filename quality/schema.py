"""Fitting a contributed table to a task's canonical schema (quality/reader.py reads it)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from quality.errors import SchemaError
from quality.task import Task


def _type_name(t: pa.DataType) -> str:
    """Task vocabulary for Arrow types (float64, not Arrow's "double")."""
    return {pa.float64(): "float64", pa.float32(): "float32", pa.string(): "string",
            pa.large_string(): "string"}.get(t, str(t))


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _describe_columns(columns: list[str]) -> str:
    """The task's columns for an error message, abbreviated when there are many."""
    if len(columns) <= 12:
        return ", ".join(columns)
    return f"{', '.join(columns[:4])}, ..., {', '.join(columns[-2:])} ({len(columns)} in all)"


def _first_uncastable(col: pa.ChunkedArray, target: pa.DataType) -> tuple[int, object]:
    """Row index and value of the first element that does not cast; bisection keeps it vectorised."""
    lo, hi = 0, len(col)  # invariant: col[lo:hi] holds a bad value
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(col.slice(lo, mid - lo), target)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo, col[lo].as_py()


def cast_column(col: pa.ChunkedArray, target: pa.DataType, name: str, file: str | None) -> pa.ChunkedArray:
    """Cast one column safely (no silent truncation or overflow), naming the first value that does not fit."""
    if col.type == target:
        return col
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    what = _type_name(target)
    if pa.types.is_null(col.type):  # an all-empty CSV column: keep the nulls, the quality suite judges them
        return pa.chunked_array([pa.nulls(len(col), target)], target)
    try:
        return pc.cast(col, target)
    except pa.ArrowNotImplementedError:
        raise SchemaError(file, name, f"cannot cast to {what}: the column has type {_type_name(col.type)}") from None
    except pa.ArrowInvalid:
        row, value = _first_uncastable(col, target)
        raise SchemaError(file, name, f"cannot cast to {what}: {value!r} (row {row}, type {_type_name(col.type)})") from None


def _check_column_set(names: list[str], expected: list[str], file: str | None, listing: str) -> None:
    """SchemaError for the first duplicated, missing or unexpected column, in that order."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SchemaError(file, n, "duplicate column")
        seen.add(n)
    for n in expected:
        if n not in seen:
            raise SchemaError(file, n, "missing column")
    for n in names:
        if n not in expected:
            raise SchemaError(file, n, f"unexpected column; {listing} {_describe_columns(expected)}")


def cast_to_task(table: pa.Table, task: Task, *, file: str | None = None) -> pa.Table:
    """The table's canonical columns in canonical order, each cast to the task's type.

    Raises SchemaError naming the column and the rule for a missing, extra or duplicated column, or a value that
    does not cast without loss.
    """
    _check_column_set(table.column_names, task.columns(), file, "the task's columns are")
    schema = task.arrow_schema()
    columns = [cast_column(table.column(f.name), f.type, f.name, file) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


PROBABILITY_SUM_TOLERANCE = 1e-6  # each predictions row's probabilities must sum to 1 within this


def cast_predictions(table: pa.Table, task: Task, *, file: str | None = None) -> pa.Table:
    """A predictions payload as row_id (int64) and one float64 probability column per label, p_<label>.

    Raises SchemaError for a missing, extra or duplicated column, a value that does not cast, or a row whose
    probabilities do not sum to 1.
    """
    expected = task.prediction_columns()
    _check_column_set(table.column_names, expected, file, "predictions have columns")
    columns = [cast_column(table.column("row_id"), pa.int64(), "row_id", file)]
    columns += [cast_column(table.column(n), pa.float64(), n, file) for n in expected[1:]]
    out = pa.Table.from_arrays(columns, names=expected)
    total = pc.fill_null(columns[1], 0.0)  # nulls are the suite's to report; here they count as 0
    for col in columns[2:]:
        total = pc.add(total, pc.fill_null(col, 0.0))
    off = pc.greater(pc.abs(pc.subtract(total, 1.0)), PROBABILITY_SUM_TOLERANCE)
    if pc.any(off).as_py():
        row = pc.index(off, True).as_py()
        raise SchemaError(file, "p_*", f"row {row}: probabilities sum to {total[row].as_py():.6g}; "
                                       f"each row must sum to 1 (within {PROBABILITY_SUM_TOLERANCE:g})")
    return out
