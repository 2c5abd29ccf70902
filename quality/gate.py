"""The quality gate: per-submission statistics (pyarrow), judged by ONE Great Expectations validation for many.

Validating each submission's rows with GX costs ~10 ms per expectation per submission. Instead each submission is
reduced to one flat row of statistics (`submission_stats`: row count, and per column nulls, non-finite values,
finite min and max, values outside the declared bounds or far outside the profile, labels outside the domain).
`gate` lays those rows out long, one row per (submission, column), and runs one GX validation over them with a
handful of expectations, each a rule on a statistic: `nulls` between 0 and 0, `min >= declared_min`, ... A rule on a
column's min and max is exactly the rule on its every value, so GX stays the authority on what passes; failures
come back per submission through `unexpected_index_column_names=["submission_id", "column"]`.

GX is imported lazily (importing it costs seconds) and runs in one ephemeral context per process, with progress
bars, analytics and chatty logging turned off.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from quality.report import Report, ReportLine
from quality.task import Task

if TYPE_CHECKING:
    import pandas as pd

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
_LONG = (ROWS, NULLS, NONFINITE, MIN, MAX, DECLARED_MIN, DECLARED_MAX, OUTSIDE, FAR, NOT_IN_DOMAIN, DUPLICATES,
         NOT_IN_CHALLENGE)

_lock = threading.Lock()
_batch_definition: Any = None


def stat_key(column: str, stat: str) -> str:
    """The key of one column's statistic in a stats row."""
    return f"{column}__{stat}"


# --- statistics (pyarrow, vectorised) ---------------------------------------------------------------------------


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    """How many entries of a boolean array are true (nulls count as false)."""
    return int(pc.sum(mask).as_py() or 0)


def _numeric_stats(col: pa.ChunkedArray, n: int) -> tuple[dict, pa.Array | pa.ChunkedArray]:
    """Nulls, non-finite count and finite min/max of a numeric column, and its finite values."""
    nulls = col.null_count
    if pa.types.is_floating(col.type):
        finite = pc.is_finite(col)
        values = pc.filter(col, finite)
        nonfinite = n - nulls - len(values)
    else:
        values, nonfinite = pc.drop_null(col), 0
    mm = pc.min_max(values)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return ({NULLS: nulls, NONFINITE: nonfinite, MIN: None if lo is None else float(lo),
             MAX: None if hi is None else float(hi)}, values)


def _outside(values, lo: float | None, hi: float | None) -> int:
    """How many values lie outside the closed interval [lo, hi] (an open end is None)."""
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
        if f.min is not None or f.max is not None:
            out[stat_key(f.name, OUTSIDE)] = _outside(values, f.min, f.max)
        p = task.profile_of(f.name)
        if p is not None:
            out[stat_key(f.name, FAR)] = _outside(values, *p.band())
    lab = table.column(task.label)
    domain = pa.array(list(task.label_domain), lab.type)
    inside = _count(pc.is_in(lab, value_set=domain))
    out[stat_key(task.label, NULLS)] = lab.null_count
    out[stat_key(task.label, NOT_IN_DOMAIN)] = n - lab.null_count - inside
    examples = ""
    if out[stat_key(task.label, NOT_IN_DOMAIN)]:
        bad = pc.filter(lab, pc.invert(pc.is_in(lab, value_set=domain)))
        examples = ", ".join(_fmt(v) for v in pc.unique(bad).to_pylist()[:_EXAMPLES])
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


# --- rules ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """One GX expectation over the long frame; `check` is its id in the report and in the expectation's meta."""

    check: str
    hard: bool
    make: Callable[[Any], Any]  # gxe module -> expectation (with meta)


def _between(check: str, column: str, lo: float | None, hi: float | None, hard: bool = True) -> _Rule:
    return _Rule(check, hard, lambda gxe: gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=lo, max_value=hi, meta={"check": check, "rule": "hard" if hard else "profile"}))


def _at_least(check: str, a: str, b: str) -> _Rule:
    """GX: a >= b on every row where both are present."""
    return _Rule(check, True, lambda gxe: gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing",
        meta={"check": check, "rule": "hard"}))


def _dataset_rules(task: Task) -> list[_Rule]:
    rules = [_between("row_count", ROWS, task.min_rows, task.max_rows), _between("not_null", NULLS, 0, 0),
             _between("finite", NONFINITE, 0, 0), _between("label_domain", NOT_IN_DOMAIN, 0, 0)]
    if any(f.min is not None for f in task.features):
        rules.append(_at_least("declared_min", MIN, DECLARED_MIN))
    if any(f.max is not None for f in task.features):
        rules.append(_at_least("declared_max", DECLARED_MAX, MAX))
    if task.profile:
        rules.append(_between("profile", FAR, 0, 0, hard=False))
    return rules


def _predictions_rules(n_challenge: int) -> list[_Rule]:
    return [_between("row_count", ROWS, n_challenge, n_challenge), _between("not_null", NULLS, 0, 0),
            _between("finite", NONFINITE, 0, 0), _between("row_id_unique", DUPLICATES, 0, 0),
            _between("row_id_in_challenge", NOT_IN_CHALLENGE, 0, 0),
            _at_least("declared_min", MIN, DECLARED_MIN), _at_least("declared_max", DECLARED_MAX, MAX)]


# --- the long frame ---------------------------------------------------------------------------------------------


def _frame(stats: Sequence[dict], rows_of: Callable[[dict], list[dict]]) -> "pd.DataFrame":
    """One row per (submission, column): columns submission_id, column and every statistic (NaN where n/a)."""
    import pandas as pd

    ids, cols = [], []
    data: dict[str, list] = {k: [] for k in _LONG}
    for s in stats:
        for row in rows_of(s):
            ids.append(s["submission_id"])
            cols.append(row.pop("column"))
            for k in _LONG:
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


def _dataset_rows(task: Task) -> Callable[[dict], list[dict]]:
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


def _predictions_rows(task: Task) -> Callable[[dict], list[dict]]:
    def rows(s: dict) -> list[dict]:
        out = [{"column": TABLE, ROWS: _need(s, ROWS)},
               {"column": "row_id", **{k: _need(s, stat_key("row_id", k)) for k in (NULLS, DUPLICATES,
                                                                                  NOT_IN_CHALLENGE)}}]
        for name in task.prediction_columns()[1:]:
            out.append({"column": name, **{k: _need(s, stat_key(name, k)) for k in (NULLS, NONFINITE, MIN, MAX)},
                        DECLARED_MIN: 0.0, DECLARED_MAX: 1.0})
        return out
    return rows


# --- running GX -------------------------------------------------------------------------------------------------


def _quiet_gx() -> None:
    """Keep GX from phoning home or logging; must run before GX is imported."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    for name in ("great_expectations", "posthog"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _new_context() -> Any:
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name in list(logging.root.manager.loggerDict):  # GX sets levels on some of its own loggers at import
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


def _get_batch_definition() -> Any:
    """The process-wide ephemeral context's whole-dataframe batch definition (made once, ~0.03 s)."""
    global _batch_definition
    if _batch_definition is None:
        asset = _new_context().data_sources.add_pandas("tributary").add_dataframe_asset("submission_stats")
        _batch_definition = asset.add_batch_definition_whole_dataframe("whole")
    return _batch_definition


RESULT_FORMAT = {"result_format": "COMPLETE", "unexpected_index_column_names": ["submission_id", "column"]}


@dataclass(frozen=True)
class _Verdict:
    """What GX said about one rule: the failing (submission_id, column) pairs, or the error it hit."""

    failing: frozenset
    error: str | None


def _exception_message(info: Any) -> str | None:
    """First line of the error GX caught while checking, if any; info is flat or keyed by metric id."""
    if not isinstance(info, dict):
        return None
    for c in [info] + [v for v in info.values() if isinstance(v, dict)]:
        if c.get("raised_exception"):
            return (str(c.get("exception_message") or "error").strip().splitlines() or ["error"])[0]
    return None


def _verdicts(result: Any) -> dict[str, _Verdict]:
    out = {}
    for r in result.results:
        check = (r.expectation_config.meta or {}).get("check")
        msg = _exception_message(r.exception_info)
        res = r.result or {}
        index = res.get("unexpected_index_list") or []
        failing = frozenset((d["submission_id"], d["column"]) for d in index if isinstance(d, dict))
        if msg is None and not r.success and not failing:
            msg = "GX reported a failure without naming the submissions"
        out[check] = _Verdict(failing, msg)
    return out


def _validate(df: "pd.DataFrame", rules: list[_Rule], name: str, docs_dir: Path | None) -> tuple[dict, str | None]:
    """Run the rules over the long frame in one GX validation; with docs_dir, also write offline Data Docs."""
    _quiet_gx()
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=name, expectations=[r.make(gxe) for r in rules])
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if docs_dir is None:
            batch = _get_batch_definition().get_batch(batch_parameters={"dataframe": df})
            return _verdicts(batch.validate(suite, result_format=RESULT_FORMAT)), None
        result, index = _validate_with_docs(df, suite, Path(docs_dir))
        return _verdicts(result), index


def _validate_with_docs(df: "pd.DataFrame", suite: Any, docs_dir: Path) -> tuple[Any, str]:
    """One checkpoint run in a fresh context with a local Data Docs site; the pages are made offline-readable."""
    import great_expectations as gx

    docs_dir = docs_dir.resolve()
    docs_dir.mkdir(parents=True, exist_ok=True)
    ctx = _new_context()
    ctx.add_data_docs_site(site_name="tributary", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    bd = ctx.data_sources.add_pandas("tributary").add_dataframe_asset("submission_stats") \
        .add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{suite.name}-{uuid.uuid4().hex[:8]}",
                                                                data=bd, suite=suite))
    cp = ctx.checkpoints.add(gx.Checkpoint(
        name=f"tributary-{uuid.uuid4().hex[:8]}", validation_definitions=[vd], result_format=RESULT_FORMAT,
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["tributary"])]))
    run = cp.run(batch_parameters={"dataframe": df})
    ctx.build_data_docs(site_names=["tributary"])
    offline_docs(docs_dir)
    (result,) = run.run_results.values()
    return result, str(docs_dir / "index.html")


_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.I)
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script\s*>", re.I)
OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;width:100%}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f2f2} a{color:#0b5cad} .hide,.d-none,.modal{display:none}
.card{border:1px solid #ddd;border-radius:4px;padding:.5rem 1rem;margin:.5rem 0}
.text-success,.fa-check-circle{color:#1a7f37} .text-danger,.fa-times{color:#c62828}
.fa-check-circle::before{content:"\\2714"} .fa-times::before{content:"\\2718"}
.fa-exclamation-triangle::before{content:"\\26A0"} pre,code{background:#f6f6f6;padding:0 .2rem}
nav,.navbar{margin-bottom:1rem}
"""


def offline_docs(docs_dir: Path) -> None:
    """Drop every stylesheet and script GX's pages load from a CDN and inline a small stylesheet instead."""
    style = f"<style>/* tributary: offline stylesheet */{OFFLINE_CSS}</style>"
    for page in Path(docs_dir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text = _REMOTE_SCRIPT.sub("", _REMOTE_LINK.sub("", text))
        if "tributary: offline stylesheet" not in text:
            text = re.sub(r"</head>", lambda _: style + "</head>", text, count=1, flags=re.I) \
                if re.search(r"</head>", text, re.I) else style + text
        if page == Path(docs_dir) / "index.html":
            text = _with_static_index(Path(docs_dir), text)
        page.write_text(text, encoding="utf-8")


def _with_static_index(docs_dir: Path, text: str) -> str:
    """GX fills the index's tables with jQuery; without it they stay empty, so list the pages as plain links too."""
    import html

    text = re.sub(r"<section class=\"tributary-offline\">.*?</section>", "", text, flags=re.S)
    parts = ['<section class="tributary-offline"><h2>Validation results</h2><ul>']
    for kind, title in (("validations", "Validation results"), ("expectations", "Expectation suites")):
        if kind == "expectations":
            parts.append(f"</ul><h2>{title}</h2><ul>")
        for page in sorted((docs_dir / kind).rglob("*.html"), reverse=kind == "validations"):
            rel = page.relative_to(docs_dir).as_posix()
            parts.append(f'<li><a href="{html.escape(rel)}">{html.escape(rel)}</a></li>')
    parts.append("</ul></section>")
    block = "".join(parts)
    m = re.search(r"<body[^>]*>", text, re.I)
    return text[:m.end()] + block + text[m.end():] if m else block + text


# --- reports ----------------------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "none"
        if x.is_integer() and abs(x) < 1e15:
            return f"{x:.1f}"
        return f"{x:.6g}"
    return repr(x) if isinstance(x, str) else str(x)


def _interval(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else _fmt(float(lo))}, {'inf' if hi is None else _fmt(float(hi))}]"


class _Lines:
    """Builds one submission's report lines from its stats and GX's verdicts."""

    def __init__(self, sid: str, verdicts: dict[str, _Verdict]):
        self.sid, self.verdicts, self.lines = sid, verdicts, []

    def passed(self, check: str, column: str) -> tuple[bool, str | None]:
        v = self.verdicts.get(check)
        if v is None:
            return True, None
        if v.error is not None:
            return False, v.error
        return (self.sid, column) not in v.failing, None

    def add(self, check: str, column: str | None, ok_and_error: tuple[bool, str | None], good: str, bad: str,
            observed: str, hard: bool = True) -> bool:
        ok, error = ok_and_error
        where = f"column '{column}'" if column else "table"
        detail = f"{where}: could not be checked ({error})" if error else f"{where}: {good if ok else bad}"
        self.lines.append(ReportLine(check, column or None, ok, detail, observed, hard))
        return ok


def _dataset_report(s: dict, task: Task, verdicts: dict[str, _Verdict], docs: str | None) -> Report:
    sid, n = s["submission_id"], int(s[ROWS])
    out = _Lines(sid, verdicts)
    out.add("row_count", None, out.passed("row_count", TABLE),
            f"{n} rows, within the allowed {task.min_rows}..{task.max_rows}",
            f"{n} rows, outside the allowed {task.min_rows}..{task.max_rows}", str(n))
    suspicious = []
    for f in task.features:
        nulls, nonfinite = s[stat_key(f.name, NULLS)], s[stat_key(f.name, NONFINITE)]
        lo, hi = s[stat_key(f.name, MIN)], s[stat_key(f.name, MAX)]
        out.add("not_null", f.name, out.passed("not_null", f.name), "no nulls",
                f"{nulls} of {n} values null (features must be non-null)", str(nulls))
        out.add("finite", f.name, out.passed("finite", f.name), "all values finite",
                f"{nonfinite} of {n} values not finite (NaN or infinite)", str(nonfinite))
        extremes = f"min {_fmt(lo)}, max {_fmt(hi)}" if lo is not None else "no finite values"
        if f.min is not None or f.max is not None:
            ok_lo, err_lo = out.passed("declared_min", f.name) if f.min is not None else (True, None)
            ok_hi, err_hi = out.passed("declared_max", f.name) if f.max is not None else (True, None)
            which = ", ".join(w for w, ok in ((f"min {_fmt(lo)}", ok_lo), (f"max {_fmt(hi)}", ok_hi)) if not ok)
            out.add("declared_bounds", f.name, (ok_lo and ok_hi, err_lo or err_hi),
                    f"all values within the declared bounds {_interval(f.min, f.max)}",
                    f"{s[stat_key(f.name, OUTSIDE)]} of {n} values outside the declared bounds "
                    f"{_interval(f.min, f.max)} ({which})", extremes)
        p = task.profile_of(f.name)
        if p is not None:
            band = _interval(*p.band())
            verdict = "rejected (the task sets reject_suspicious)" if task.reject_suspicious else "accepted"
            far = s[stat_key(f.name, FAR)]
            if not out.add("profile", f.name, out.passed("profile", f.name), f"within the holdout profile {band}",
                           f"{far} of {n} values far outside the holdout profile {band} ({extremes}); "
                           f"suspicious, {verdict}", f"{far} far; {extremes}", hard=False):
                suspicious.append(f.name)
    lab = task.label
    nulls, bad = s[stat_key(lab, NULLS)], s[stat_key(lab, NOT_IN_DOMAIN)]
    out.add("not_null", lab, out.passed("not_null", lab), "no nulls", f"{nulls} of {n} labels null", str(nulls))
    examples = s.get(stat_key(lab, EXAMPLES)) or ""
    domain = ", ".join(_fmt(v) for v in task.label_domain)
    out.add("label_domain", lab, out.passed("label_domain", lab), f"all labels in the label domain [{domain}]",
            f"{bad} of {n} labels not in the label domain [{domain}]" + (f" (e.g. {examples})" if examples else ""),
            str(bad))
    return _finish(task, s, out.lines, tuple(suspicious), docs)


def _finish(task: Task, s: dict, lines: list[ReportLine], suspicious: tuple[str, ...], docs: str | None) -> Report:
    success = all(line.success for line in lines if line.hard) and not (task.reject_suspicious and suspicious)
    return Report(task=task.name, success=success, rows=int(s[ROWS]), lines=tuple(lines), suspicious=suspicious,
                  docs=docs)


def _predictions_report(s: dict, task: Task, n_challenge: int, verdicts: dict[str, _Verdict],
                        docs: str | None) -> Report:
    n = int(s[ROWS])
    out = _Lines(s["submission_id"], verdicts)
    out.add("row_count", None, out.passed("row_count", TABLE), f"{n} rows, one per challenge row",
            f"{n} rows, but {n_challenge} expected (one per challenge row)", str(n))
    nulls, dup, unknown = (s[stat_key("row_id", k)] for k in (NULLS, DUPLICATES, NOT_IN_CHALLENGE))
    out.add("not_null", "row_id", out.passed("not_null", "row_id"), "no nulls", f"{nulls} of {n} row ids null",
            str(nulls))
    out.add("row_id_unique", "row_id", out.passed("row_id_unique", "row_id"), "all row ids unique",
            f"{dup} row ids repeated", str(dup))
    out.add("row_id_in_challenge", "row_id", out.passed("row_id_in_challenge", "row_id"),
            "all row ids are challenge rows", f"{unknown} row ids are not challenge rows", str(unknown))
    for name in task.prediction_columns()[1:]:
        nulls, nonfinite = s[stat_key(name, NULLS)], s[stat_key(name, NONFINITE)]
        lo, hi = s[stat_key(name, MIN)], s[stat_key(name, MAX)]
        extremes = f"min {_fmt(lo)}, max {_fmt(hi)}" if lo is not None else "no finite values"
        out.add("not_null", name, out.passed("not_null", name), "no nulls", f"{nulls} of {n} values null", str(nulls))
        out.add("finite", name, out.passed("finite", name), "all values finite",
                f"{nonfinite} of {n} values not finite (NaN or infinite)", str(nonfinite))
        ok_lo, e1 = out.passed("declared_min", name)
        ok_hi, e2 = out.passed("declared_max", name)
        out.add("probability_bounds", name, (ok_lo and ok_hi, e1 or e2), "all probabilities within [0.0, 1.0]",
                f"probabilities outside [0.0, 1.0] ({extremes})", extremes)
    return _finish(task, s, out.lines, (), docs)


# --- the gate ---------------------------------------------------------------------------------------------------


def _unique_ids(stats: Sequence[dict]) -> None:
    seen: set[str] = set()
    for s in stats:
        sid = s.get("submission_id")
        if sid in seen:
            raise ValueError(f"submission_id {sid!r} appears twice in the stats given to the gate")
        seen.add(sid)


def gate(stats: Sequence[dict], task: Task, *, docs_dir: Path | None = None) -> dict[str, Report]:
    """Judge many submissions of one task in one GX validation of their stats; a Report per submission_id."""
    stats = list(stats)
    if not stats:
        return {}
    _unique_ids(stats)
    df = _frame(stats, _dataset_rows(task))
    verdicts, docs = _validate(df, _dataset_rules(task), f"tributary-{task.name}", docs_dir)
    return {s["submission_id"]: _dataset_report(s, task, verdicts, docs) for s in stats}


def gate_predictions(stats: Sequence[dict], task: Task, challenge_ids: Sequence[int], *,
                     docs_dir: Path | None = None) -> dict[str, Report]:
    """Judge many predictions submissions for a task's challenge in one GX validation; a Report per submission_id."""
    stats = list(stats)
    if not stats:
        return {}
    _unique_ids(stats)
    n = len(challenge_ids)
    df = _frame(stats, _predictions_rows(task))
    verdicts, docs = _validate(df, _predictions_rules(n), f"tributary-{task.name}-predictions", docs_dir)
    return {s["submission_id"]: _predictions_report(s, task, n, verdicts, docs) for s in stats}


# --- one submission ---------------------------------------------------------------------------------------------

SINGLE = "submission"


def _cast(table: pa.Table, task: Task, file: str | None) -> pa.Table:
    from quality.schema import cast_to_task

    return table if table.schema == task.arrow_schema() else cast_to_task(table, task, file=file)


def check_table(table: pa.Table, task: Task, *, docs_dir: Path | None = None) -> Report:
    """Gate one table (cast to the task first if it is not already; SchemaError if it cannot be)."""
    table = _cast(table, task, None)
    return gate([submission_stats(table, task, SINGLE)], task, docs_dir=docs_dir)[SINGLE]


def check_file(path: Path, task: Task, *, docs_dir: Path | None = None) -> Report:
    """What ingest does to a dataset file, minus the signature: read, cast, stats, gate (SchemaError if unreadable
    or off-schema)."""
    from quality.reader import read_table
    from quality.schema import cast_to_task

    table = cast_to_task(read_table(path), task, file=str(path))
    return gate([submission_stats(table, task, SINGLE)], task, docs_dir=docs_dir)[SINGLE]


def check_predictions(table: pa.Table, task: Task, challenge_ids: Sequence[int], *,
                      docs_dir: Path | None = None) -> Report:
    """Gate one cast predictions table against a task's challenge row ids."""
    stats = predictions_stats(table, task, challenge_ids, SINGLE)
    return gate_predictions([stats], task, challenge_ids, docs_dir=docs_dir)[SINGLE]

