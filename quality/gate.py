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

The steps live in their own modules: quality.statistics (the stats rows), quality.rules (the expectations and the
long frame), quality.validation (running GX), quality.data_docs (offline Data Docs) and quality.report_lines (the
Report in plain words); this module puts them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from protocol.files import MAX_PAYLOAD_BYTES
from quality.report import Report
from quality.report_lines import dataset_report, predictions_report
from quality.rules import dataset_rows, dataset_rules, frame, predictions_rows, predictions_rules
from quality.statistics import predictions_stats, submission_stats
from quality.task import Task
from quality.validation import validate


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
    df = frame(stats, dataset_rows(task))
    verdicts, docs = validate(df, dataset_rules(task), f"tributary-{task.name}", docs_dir)
    return {s["submission_id"]: dataset_report(s, task, verdicts, docs) for s in stats}


def gate_predictions(stats: Sequence[dict], task: Task, challenge_ids: Sequence[int], *,
                     docs_dir: Path | None = None) -> dict[str, Report]:
    """Judge many predictions submissions for a task's challenge in one GX validation; a Report per submission_id."""
    stats = list(stats)
    if not stats:
        return {}
    _unique_ids(stats)
    n = len(challenge_ids)
    df = frame(stats, predictions_rows(task))
    verdicts, docs = validate(df, predictions_rules(n), f"tributary-{task.name}-predictions", docs_dir)
    return {s["submission_id"]: predictions_report(s, task, n, verdicts, docs) for s in stats}


# --- one submission ---------------------------------------------------------------------------------------------

SINGLE = "submission"


def _cast(table: pa.Table, task: Task, file: str | None) -> pa.Table:
    from quality.schema import cast_to_task

    return table if table.schema == task.arrow_schema() else cast_to_task(table, task, file=file)


def check_table(table: pa.Table, task: Task, *, docs_dir: Path | None = None) -> Report:
    """Gate one table (cast to the task first if it is not already; SchemaError if it cannot be)."""
    table = _cast(table, task, None)
    return gate([submission_stats(table, task, SINGLE)], task, docs_dir=docs_dir)[SINGLE]


def check_file(path: Path, task: Task, *, docs_dir: Path | None = None, max_bytes: int = MAX_PAYLOAD_BYTES) -> Report:
    """What ingest does to a dataset file, minus the signature: read (through the same reader, with the home's
    max_payload_bytes), cast, stats, gate (SchemaError if unreadable, too large or off-schema)."""
    from quality.reader import read_table
    from quality.schema import cast_to_task

    table = cast_to_task(read_table(path, max_bytes), task, file=str(path))
    return gate([submission_stats(table, task, SINGLE)], task, docs_dir=docs_dir)[SINGLE]


def check_predictions(table: pa.Table, task: Task, challenge_ids: Sequence[int], *,
                      docs_dir: Path | None = None) -> Report:
    """Gate one cast predictions table against a task's challenge row ids."""
    stats = predictions_stats(table, task, challenge_ids, SINGLE)
    return gate_predictions([stats], task, challenge_ids, docs_dir=docs_dir)[SINGLE]

