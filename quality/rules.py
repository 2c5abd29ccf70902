"""The gate's rules as GX expectations, and the long frame they judge.

`gate` lays the submissions' stats rows out long, one row per (submission, column) (`frame`), and runs one GX
validation over them with a handful of expectations, each a rule on a statistic: `nulls` between 0 and 0,
`min >= declared_min`, ... A rule on a column's min and max is exactly the rule on its every value, so GX stays the
authority on what passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from quality.statistics import (DECLARED_MAX, DECLARED_MIN, DUPLICATES, FAR, LONG, MAX, MIN, NONFINITE,
                                NOT_IN_CHALLENGE, NOT_IN_DOMAIN, NULLS, ROWS, TABLE, stat_key)
from quality.task import Task

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Rule:
    """One GX expectation over the long frame; `check` is its id in the report and in the expectation's meta."""

    check: str
    hard: bool
    make: Callable[[Any], Any]  # gxe module -> expectation (with meta)


def _between(check: str, column: str, lo: float | None, hi: float | None, hard: bool = True) -> Rule:
    return Rule(check, hard, lambda gxe: gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=lo, max_value=hi, meta={"check": check, "rule": "hard" if hard else "profile"}))


def _at_least(check: str, a: str, b: str) -> Rule:
    """GX: a >= b on every row where both are present."""
    return Rule(check, True, lambda gxe: gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing",
        meta={"check": check, "rule": "hard"}))


def dataset_rules(task: Task) -> list[Rule]:
    rules = [_between("row_count", ROWS, task.min_rows, task.max_rows), _between("not_null", NULLS, 0, 0),
             _between("finite", NONFINITE, 0, 0), _between("label_domain", NOT_IN_DOMAIN, 0, 0)]
    if any(f.min is not None for f in task.features):
        rules.append(_at_least("declared_min", MIN, DECLARED_MIN))
    if any(f.max is not None for f in task.features):
        rules.append(_at_least("declared_max", DECLARED_MAX, MAX))
    if task.profile:
        rules.append(_between("profile", FAR, 0, 0, hard=False))
    return rules


def predictions_rules(n_challenge: int) -> list[Rule]:
    return [_between("row_count", ROWS, n_challenge, n_challenge), _between("not_null", NULLS, 0, 0),
            _between("finite", NONFINITE, 0, 0), _between("row_id_unique", DUPLICATES, 0, 0),
            _between("row_id_in_challenge", NOT_IN_CHALLENGE, 0, 0),
            _at_least("declared_min", MIN, DECLARED_MIN), _at_least("declared_max", DECLARED_MAX, MAX)]


# --- the long frame ---------------------------------------------------------------------------------------------


def frame(stats: Sequence[dict], rows_of: Callable[[dict], list[dict]]) -> "pd.DataFrame":
    """One row per (submission, column): columns submission_id, column and every statistic (NaN where n/a)."""
    import pandas as pd

    ids, cols = [], []
    data: dict[str, list] = {k: [] for k in LONG}
    for s in stats:
        for row in rows_of(s):
            ids.append(s["submission_id"])
            cols.append(row.pop("column"))
            for k in LONG:
                v = row.get(k)
                data[k].append(math.nan if v is None else float(v))
    return pd.DataFrame({"submission_id": pd.array(ids, dtype=object), "column": pd.array(cols, dtype=object),
                         **{k: pd.array(v, dtype="float64") for k, v in data.items()}})


def _need(s: dict, key: str) -> Any:
    try:
        return s[key]
    except KeyError:
        raise ValueError(f"stats of submission {s.get('submission_id')!r} lack {key!r}; "
                         "build them with submission_stats for the same task") from None


def dataset_rows(task: Task) -> Callable[[dict], list[dict]]:
    def rows(s: dict) -> list[dict]:
        out = [{"column": TABLE, ROWS: _need(s, ROWS)}]
        for f in task.features:
            row = {"column": f.name, **{k: _need(s, stat_key(f.name, k)) for k in (NULLS, NONFINITE, MIN, MAX)},
                   DECLARED_MIN: f.min, DECLARED_MAX: f.max}
            if task.profile_of(f.name) is not None:
                row[FAR] = _need(s, stat_key(f.name, FAR))
            out.append(row)
        out.append({"column": task.label, NULLS: _need(s, stat_key(task.label, NULLS)),
                    NOT_IN_DOMAIN: _need(s, stat_key(task.label, NOT_IN_DOMAIN))})
        return out
    return rows


def predictions_rows(task: Task) -> Callable[[dict], list[dict]]:
    def rows(s: dict) -> list[dict]:
        out = [{"column": TABLE, ROWS: _need(s, ROWS)},
               {"column": "row_id", **{k: _need(s, stat_key("row_id", k)) for k in (NULLS, DUPLICATES,
                                                                                  NOT_IN_CHALLENGE)}}]
        for name in task.prediction_columns()[1:]:
            out.append({"column": name, **{k: _need(s, stat_key(name, k)) for k in (NULLS, NONFINITE, MIN, MAX)},
                        DECLARED_MIN: 0.0, DECLARED_MAX: 1.0})
        return out
    return rows
