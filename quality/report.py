"""The outcome of the quality gate on one submission, in plain words: one line per rule it was held to."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ReportLine:
    """One rule on one column (or the table): GX's verdict, what was observed, and a detail a contributor can act on.

    `hard` lines reject when they fail; profile lines (hard=False) only mark the column suspicious.
    """

    expectation: str
    column: str | None
    success: bool
    detail: str
    observed: str = ""
    hard: bool = True


@dataclass(frozen=True)
class Report:
    """The gate's verdict on one submission: success iff every hard line passed (and, where the task says
    reject_suspicious, no column was suspicious)."""

    task: str
    success: bool
    rows: int
    lines: tuple[ReportLine, ...]
    suspicious: tuple[str, ...] = ()  # columns far outside the holdout profile
    docs: str | None = None  # index.html of the GX Data Docs of this validation, when written

    def failures(self) -> tuple[ReportLine, ...]:
        """The lines whose expectation failed (hard and profile alike)."""
        return tuple(line for line in self.lines if not line.success)

    def summary(self) -> str:
        """One phrase per failure, "; "-joined (hard ones first), or a one-line all-clear naming suspicious columns."""
        hard = [line for line in self.lines if line.hard]
        if self.success:
            text = f"all {len(hard)} hard rules passed"
            if self.suspicious:
                text += f"; suspicious (far outside the holdout profile, accepted): {', '.join(self.suspicious)}"
            return text
        failed = sorted(self.failures(), key=lambda line: not line.hard)
        return "; ".join(line.detail for line in failed)

    def to_dict(self) -> dict:
        """A JSON-ready dict (for the CLI, quarantine details and Dagster metadata)."""
        return {"task": self.task, "success": self.success, "rows": self.rows,
                "suspicious": list(self.suspicious), "docs": self.docs,
                "lines": [asdict(line) for line in self.lines]}


def fmt(x: Any) -> str:
    """A statistic or label as a report quotes it: floats to 6 significant digits (whole ones as 1.0), NaN as
    "none", strings quoted."""
    if isinstance(x, float):
        if math.isnan(x):
            return "none"
        if x.is_integer() and abs(x) < 1e15:
            return f"{x:.1f}"
        return f"{x:.6g}"
    return repr(x) if isinstance(x, str) else str(x)
