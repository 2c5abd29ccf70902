"""The Great Expectations suite of a task, and a plain-words report of running it on a table.

GX is imported lazily (importing it costs seconds) and runs in one ephemeral context per process, with progress
bars, analytics and chatty logging turned off.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quality.task import Task

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

# GX type names as pandas reports them; "str" (not "object") passes for strings on both pandas 2 and 3.
_GX_TYPES = {"float64": "float64", "int64": "int64", "string": "str"}
_EXAMPLES = 3  # how many offending values a detail line quotes

_lock = threading.Lock()
_batch_definition: Any = None


@dataclass(frozen=True)
class ReportLine:
    """The outcome of one expectation, with a detail a contributor can act on."""

    expectation: str
    column: str | None
    success: bool
    detail: str


@dataclass(frozen=True)
class Report:
    """The outcome of a task's suite on one table: one line per expectation."""

    task: str
    success: bool
    rows: int
    lines: tuple[ReportLine, ...]

    def failures(self) -> tuple[ReportLine, ...]:
        """The lines whose expectation failed."""
        return tuple(line for line in self.lines if not line.success)

    def summary(self) -> str:
        """One phrase per failure, "; "-joined, or a one-line all-clear."""
        if self.success:
            return f"all {len(self.lines)} expectations passed"
        return "; ".join(line.detail for line in self.failures())

    def to_dict(self) -> dict:
        """A JSON-ready dict (for the CLI, quarantine details and Dagster metadata)."""
        return {"task": self.task, "success": self.success, "rows": self.rows,
                "lines": [asdict(line) for line in self.lines]}


def _quiet_gx() -> None:
    """Keep GX from phoning home or logging; must run before GX is imported."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in ("great_expectations", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _bound(x: float) -> float | None:
    """GX takes None for an open end of a range."""
    return None if math.isinf(x) else x


def build_suite(task: Task) -> "gx.ExpectationSuite":
    """The task's expectations: row count, exact ordered columns, and per column type, nulls and range or domain."""
    _quiet_gx()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    exps: list = [
        gxe.ExpectTableRowCountToBeBetween(min_value=task.min_rows, max_value=task.max_rows),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=task.columns()),
    ]
    mostly = max(0.0, min(1.0, 1.0 - task.max_null_fraction))
    for f in task.features:
        exps += [
            gxe.ExpectColumnValuesToBeOfType(column=f.name, type_=_GX_TYPES[f.dtype]),
            gxe.ExpectColumnValuesToNotBeNull(column=f.name, mostly=mostly),
            gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=_bound(f.min), max_value=_bound(f.max)),
        ]
    exps += [
        gxe.ExpectColumnValuesToBeOfType(column=task.label, type_=_GX_TYPES[task.label_dtype]),
        gxe.ExpectColumnValuesToNotBeNull(column=task.label),
        gxe.ExpectColumnValuesToBeInSet(column=task.label, value_set=list(task.label_domain)),
    ]
    return gx.ExpectationSuite(name=f"tributary-{task.name}", expectations=exps)


def _get_batch_definition() -> Any:
    """The process-wide ephemeral context's whole-dataframe batch definition (made once, ~0.03 s)."""
    global _batch_definition
    if _batch_definition is None:
        _quiet_gx()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas("tributary").add_dataframe_asset("contribution")
        _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    return _batch_definition


def _to_pandas(table: pa.Table) -> "pd.DataFrame":
    """Pandas frame for GX; integers become nullable Int64 so a null does not turn a column into float64."""
    import pandas as pd

    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


# --- plain-words details ---------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return f"{x:.1f}"
    return repr(x) if isinstance(x, str) else str(x)


def _examples(result: dict) -> str:
    values = []
    for v in result.get("partial_unexpected_list") or []:
        if v not in values:
            values.append(v)
    return f" (e.g. {', '.join(_fmt(v) for v in values[:_EXAMPLES])})" if values else ""


def _range(lo: Any, hi: Any) -> str:
    return f"[{_fmt(float(lo)) if lo is not None else '-inf'}, {_fmt(float(hi)) if hi is not None else 'inf'}]"


def _columns_detail(kwargs: dict, observed: list[str], success: bool) -> str:
    expected = list(kwargs["column_list"])
    if success:
        return f"table: columns are the task's {len(expected)} columns in order"
    missing = [c for c in expected if c not in observed]
    extra = [c for c in observed if c not in expected]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"unexpected {', '.join(map(repr, extra))}")
    if not parts:
        parts.append("the columns are in the wrong order (cast the table to the task first)")
    return "table: " + "; ".join(parts)


def _detail(kind: str, kwargs: dict, result: dict, success: bool, rows: int, task: Task) -> str:
    """One human sentence for one expectation's result (GX BASIC result format)."""
    col = kwargs.get("column")
    where = f"column '{col}'"
    n = result.get("element_count", rows)
    bad = result.get("unexpected_count", 0) or 0
    if kind == "expect_table_row_count_to_be_between":
        verdict = "within" if success else "outside"
        return f"table: {result.get('observed_value', rows)} rows, {verdict} the allowed {task.min_rows}..{task.max_rows}"
    if kind == "expect_table_columns_to_match_ordered_list":
        return _columns_detail(kwargs, list(result.get("observed_value") or []), success)
    if kind == "expect_column_values_to_be_of_type":
        expected = {"str": "string"}.get(kwargs["type_"], kwargs["type_"])
        if success:
            return f"{where}: type {expected}"
        observed = result.get("observed_value")
        if observed is None and bad:
            return f"{where}: {bad} of {n} values are not of type {expected}{_examples(result)}"
        return f"{where}: type {observed}, expected {expected}"
    if kind == "expect_column_values_to_not_be_null":
        mostly = kwargs.get("mostly", 1.0)
        limit = "none allowed" if mostly >= 1.0 else f"at most {(1.0 - mostly) * 100:.4g}% allowed"
        return f"{where}: {bad} of {n} values null ({limit})"
    if kind == "expect_column_values_to_be_between":
        rng = _range(kwargs.get("min_value"), kwargs.get("max_value"))
        nonnull = n - (result.get("missing_count", 0) or 0)
        if success:
            return f"{where}: all {nonnull} non-null values within {rng}"
        return f"{where}: {bad} of {nonnull} values outside {rng}{_examples(result)}"
    if kind == "expect_column_values_to_be_in_set":
        allowed = "the label domain" if col == task.label else "the allowed set"
        if success:
            return f"{where}: all values in {allowed}"
        return f"{where}: {bad} values not in {allowed}{_examples(result)}"
    if kind == "expect_column_values_to_be_unique":
        return f"{where}: all values unique" if success else f"{where}: {bad} values repeated{_examples(result)}"
    if kind == "expect_table_row_count_to_equal":
        return f"table: {result.get('observed_value', rows)} rows, {'as' if success else 'but'} {kwargs['value']} expected"
    return f"{where if col else 'table'}: {'passed' if success else 'failed'}"


def _exception_message(info: Any) -> str | None:
    """First line of the error GX caught while checking, if any; info is flat or keyed by metric id."""
    if not isinstance(info, dict):
        return None
    candidates = [info] + [v for v in info.values() if isinstance(v, dict)]
    for c in candidates:
        if c.get("raised_exception"):
            return (str(c.get("exception_message") or "error").strip().splitlines() or ["error"])[0]
    return None


def _line(res: Any, rows: int, columns: set[str], task: Task) -> ReportLine:
    cfg = res.expectation_config
    kind, kwargs = cfg.type, dict(cfg.kwargs)
    col = kwargs.get("column")
    if col is not None and col not in columns:
        return ReportLine(kind, col, False, f"column '{col}': missing, so it could not be checked")
    msg = _exception_message(res.exception_info)
    if msg is not None:
        where = f"column '{col}'" if col else "table"
        return ReportLine(kind, col, False, f"{where}: could not be checked ({msg})")
    result = res.result or {}
    return ReportLine(kind, col, bool(res.success), _detail(kind, kwargs, result, bool(res.success), rows, task))


def validate(table: pa.Table, task: Task) -> Report:
    """Run the task's GX suite on the table and report every expectation in suite order."""
    return run_suite(table, task, build_suite(task))


def build_predictions_suite(task: Task, challenge_ids: Sequence[int]) -> "gx.ExpectationSuite":
    """Predictions for a task's challenge: every challenge row once, probabilities in [0, 1], no nulls."""
    _quiet_gx()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    exps: list = [
        gxe.ExpectTableRowCountToEqual(value=len(challenge_ids)),
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=task.prediction_columns()),
        gxe.ExpectColumnValuesToBeUnique(column="row_id"),
        gxe.ExpectColumnValuesToBeInSet(column="row_id", value_set=sorted(int(i) for i in challenge_ids)),
    ]
    for col in task.prediction_columns()[1:]:
        exps += [
            gxe.ExpectColumnValuesToNotBeNull(column=col),
            gxe.ExpectColumnValuesToBeBetween(column=col, min_value=0.0, max_value=1.0),
        ]
    return gx.ExpectationSuite(name=f"tributary-{task.name}-predictions", expectations=exps)


def validate_predictions(table: pa.Table, task: Task, challenge_ids: Sequence[int]) -> Report:
    """Run the predictions suite of a task's challenge on a (cast) predictions table."""
    return run_suite(table, task, build_predictions_suite(task, challenge_ids))


def run_suite(table: pa.Table, task: Task, suite: "gx.ExpectationSuite") -> Report:
    """Validate a table with a suite and report every expectation in suite order, in plain words."""
    df = _to_pandas(table)
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = _get_batch_definition().get_batch(batch_parameters={"dataframe": df})
        # BASIC has counts and example values; SUMMARY adds value counts and indexes that cost ~40% more time.
        result = batch.validate(suite, result_format={"result_format": "BASIC",
                                                      "partial_unexpected_count": _EXAMPLES * 4})
    # GX does not keep suite order in its results; put them back by (expectation, column), unique in our suite.
    by_key = {(r.expectation_config.type, r.expectation_config.kwargs.get("column")): r for r in result.results}
    columns = set(table.column_names)
    lines = []
    for exp in suite.expectations:
        r = by_key[(exp.expectation_type, getattr(exp, "column", None))]
        lines.append(_line(r, table.num_rows, columns, task))
    return Report(task=task.name, success=all(line.success for line in lines), rows=table.num_rows,
                  lines=tuple(lines))
