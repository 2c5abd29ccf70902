"""Compatibility names for callers of the old per-table GX suite; the gate lives in quality.gate.

`validate(table, task)` is check_table and `validate_predictions(table, task, challenge_ids)` is
check_predictions: the same stats-then-one-GX-validation path ingest runs.
"""

from __future__ import annotations

from quality.gate import check_predictions as validate_predictions  # noqa: F401
from quality.gate import check_table as validate  # noqa: F401
from quality.report import Report, ReportLine  # noqa: F401
