"""A submission's Report in plain words, built from its stats row and GX's verdicts: one line per rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quality.report import Report, ReportLine, fmt
from quality.statistics import (DUPLICATES, EXAMPLES, FAR, MAX, MIN, NONFINITE, NOT_IN_CHALLENGE, NOT_IN_DOMAIN,
                                NULLS, OUTSIDE, ROWS, TABLE, stat_key)
from quality.task import Task

if TYPE_CHECKING:
    from quality.validation import Verdict


def _interval(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else fmt(float(lo))}, {'inf' if hi is None else fmt(float(hi))}]"


class _Lines:
    """Builds one submission's report lines from its stats and GX's verdicts."""

    def __init__(self, sid: str, verdicts: dict[str, Verdict]):
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


def dataset_report(s: dict, task: Task, verdicts: dict[str, Verdict], docs: str | None) -> Report:
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
        extremes = f"min {fmt(lo)}, max {fmt(hi)}" if lo is not None else "no finite values"
        if f.min is not None or f.max is not None:
            ok_lo, err_lo = out.passed("declared_min", f.name) if f.min is not None else (True, None)
            ok_hi, err_hi = out.passed("declared_max", f.name) if f.max is not None else (True, None)
            which = ", ".join(w for w, ok in ((f"min {fmt(lo)}", ok_lo), (f"max {fmt(hi)}", ok_hi)) if not ok)
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
    domain = ", ".join(fmt(v) for v in task.label_domain)
    out.add("label_domain", lab, out.passed("label_domain", lab), f"all labels in the label domain [{domain}]",
            f"{bad} of {n} labels not in the label domain [{domain}]" + (f" (e.g. {examples})" if examples else ""),
            str(bad))
    return _finish(task, s, out.lines, tuple(suspicious), docs)


def _finish(task: Task, s: dict, lines: list[ReportLine], suspicious: tuple[str, ...], docs: str | None) -> Report:
    success = all(line.success for line in lines if line.hard) and not (task.reject_suspicious and suspicious)
    return Report(task=task.name, success=success, rows=int(s[ROWS]), lines=tuple(lines), suspicious=suspicious,
                  docs=docs)


def predictions_report(s: dict, task: Task, n_challenge: int, verdicts: dict[str, Verdict],
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
        extremes = f"min {fmt(lo)}, max {fmt(hi)}" if lo is not None else "no finite values"
        out.add("not_null", name, out.passed("not_null", name), "no nulls", f"{nulls} of {n} values null", str(nulls))
        out.add("finite", name, out.passed("finite", name), "all values finite",
                f"{nonfinite} of {n} values not finite (NaN or infinite)", str(nonfinite))
        ok_lo, e1 = out.passed("declared_min", name)
        ok_hi, e2 = out.passed("declared_max", name)
        out.add("probability_bounds", name, (ok_lo and ok_hi, e1 or e2), "all probabilities within [0.0, 1.0]",
                f"probabilities outside [0.0, 1.0] ({extremes})", extremes)
    return _finish(task, s, out.lines, (), docs)
