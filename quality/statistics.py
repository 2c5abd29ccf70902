"""Per-submission statistics (pyarrow, vectorised): each submission reduced to one flat row the gate judges.

A row holds the row count and, per column, nulls, non-finite values, finite min and max, values outside the declared
bounds or far outside the profile, and labels outside the domain, under "<column>__<stat>" keys (stat_key). The
same names are the columns of the long frame the GX rules run over (quality.rules).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quality.report import fmt
from quality.task import Task

ROWS = "rows"
TABLE = ""  # the `column` of a submission's table-level row in the long frame
_EXAMPLES = 3  # how many offending labels a detail quotes

# the statistics of one column, as "<column>__<stat>" keys of a stats row and as columns of the long frame
NULLS, NONFINITE, MIN, MAX = "nulls", "nonfinite", "min", "max"
OUTSIDE = "outside"  # values outside the declared bounds
FAR = "far"  # values far outside the holdout profile
NOT_IN_DOMAIN, EXAMPLES = "not_in_domain", "examples"
DUPLICATES, NOT_IN_CHALLENGE = "duplicates", "not_in_challenge"
DECLARED_MIN, DECLARED_MAX = "declared_min", "declared_max"
LONG = (ROWS, NULLS, NONFINITE, MIN, MAX, DECLARED_MIN, DECLARED_MAX, OUTSIDE, FAR, NOT_IN_DOMAIN, DUPLICATES,
         NOT_IN_CHALLENGE)


def stat_key(column: str, stat: str) -> str:
    """The key of one column's statistic in a stats row."""
    return f"{column}__{stat}"


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    """How many entries of a boolean array are true (nulls count as false)."""
    return int(pc.sum(mask).as_py() or 0)


def _numeric_stats(col: pa.ChunkedArray, n: int) -> tuple[dict, pa.Array | pa.ChunkedArray]:
    """Nulls, non-finite count and finite min/max of a numeric column, and its finite values (nulls may remain:
    every later count skips them)."""
    nulls = col.null_count
    if pa.types.is_floating(col.type):
        finite = pc.is_finite(col)
        nonfinite = n - nulls - _count(finite)
        values = pc.filter(col, finite) if nonfinite else col  # the usual case needs no copy
    else:
        values, nonfinite = col, 0
    mm = pc.min_max(values)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return ({NULLS: nulls, NONFINITE: nonfinite, MIN: None if lo is None else float(lo),
             MAX: None if hi is None else float(hi)}, values)


def _outside(values, lo: float | None, hi: float | None, seen: tuple | None = None) -> int:
    """How many values lie outside the closed interval [lo, hi] (an open end is None). `seen` is the values' (min,
    max) when known: if both lie inside, nothing does, and no value is looked at."""
    if seen is not None:
        vmin, vmax = seen
        if vmin is None or ((lo is None or vmin >= lo) and (hi is None or vmax <= hi)):
            return 0
    count = 0
    if lo is not None:
        count += _count(pc.less(values, lo))
    if hi is not None:
        count += _count(pc.greater(values, hi))
    return count


def submission_stats(table: pa.Table, task: Task, submission_id: str) -> dict:
    """One flat row of statistics of a table already cast to the task (quality.schema.cast_to_task).

    Keys: submission_id, rows, and "<column>__<stat>": per feature nulls, nonfinite, min and max (over finite values,
    None when there are none), outside (declared bounds, when declared), far (profile, when profiled); for the
    label nulls, not_in_domain and examples (a few offending labels, for the report).
    """
    n = table.num_rows
    out: dict[str, Any] = {"submission_id": str(submission_id), ROWS: n}
    for f in task.features:
        stats, values = _numeric_stats(table.column(f.name), n)
        for k, v in stats.items():
            out[stat_key(f.name, k)] = v
        seen = (stats[MIN], stats[MAX])
        if f.min is not None or f.max is not None:
            out[stat_key(f.name, OUTSIDE)] = _outside(values, f.min, f.max, seen)
        p = task.profile_of(f.name)
        if p is not None:
            out[stat_key(f.name, FAR)] = _outside(values, *p.band(), seen)
    lab = table.column(task.label)
    domain = pa.array(list(task.label_domain), lab.type)
    inside = _count(pc.is_in(lab, value_set=domain))
    out[stat_key(task.label, NULLS)] = lab.null_count
    out[stat_key(task.label, NOT_IN_DOMAIN)] = n - lab.null_count - inside
    examples = ""
    if out[stat_key(task.label, NOT_IN_DOMAIN)]:
        bad = pc.filter(lab, pc.invert(pc.is_in(lab, value_set=domain)))
        examples = ", ".join(fmt(v) for v in pc.unique(bad).to_pylist()[:_EXAMPLES])
    out[stat_key(task.label, EXAMPLES)] = examples
    return out


def predictions_stats(table: pa.Table, task: Task, challenge_ids: Sequence[int], submission_id: str) -> dict:
    """One flat row of statistics of a predictions table already cast (quality.schema.cast_predictions).

    Keys: submission_id, rows, row_id__nulls, row_id__duplicates, row_id__not_in_challenge, and per probability
    column nulls, nonfinite, min and max (over finite values).
    """
    n = table.num_rows
    out: dict[str, Any] = {"submission_id": str(submission_id), ROWS: n}
    ids = table.column("row_id")
    present = pc.drop_null(ids)
    out[stat_key("row_id", NULLS)] = ids.null_count
    out[stat_key("row_id", DUPLICATES)] = len(present) - pc.count_distinct(present).as_py()
    ids_set = challenge_ids if isinstance(challenge_ids, pa.Array) else pa.array(list(challenge_ids), pa.int64())
    out[stat_key("row_id", NOT_IN_CHALLENGE)] = len(present) - _count(pc.is_in(present, value_set=ids_set))
    for name in task.prediction_columns()[1:]:
        stats, _ = _numeric_stats(table.column(name), n)
        for k, v in stats.items():
            out[stat_key(name, k)] = v
    return out
