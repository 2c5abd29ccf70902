"""The lake's layout and its reads: where a submission's rows land and how they are read back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

WEIGHTS_TASK = "_weights"  # lake task directory for validator weight vectors
ID_COLUMNS = ("_submission_id", "_contributor", "_row")  # added to every landed table
ROW_HASH_COLUMN = "_row_hash"  # datasets only: rewards.duplicates.row_hashes of features and label


def lake_path(lake: str, epoch: int, kind: str, task: str, digest: str, public_key: str) -> str:
    """Where a submission's rows live: addressed by payload digest and sender within epoch, kind and task.

    The sender is part of the address because the landed rows carry it: a copy of someone else's file from
    another key is other content, and must land so that scoring can find it a duplicate.
    """
    task_dir = WEIGHTS_TASK if kind == "weights" else task
    return f"{lake.rstrip('/')}/epoch={epoch}/kind={kind}/task={task_dir}/{digest}-{public_key[:16]}.parquet"


def read_lake_file(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One landed submission's rows (optionally only some columns)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path), columns=list(columns) if columns is not None else None)


def read_lake_files(paths: Sequence[str | Path], schema_columns: Sequence[str]) -> pa.Table:
    """Several landed submissions' rows concatenated; an empty table with `schema_columns` when there are none."""
    tables = [read_lake_file(p, schema_columns) for p in paths]
    if not tables:
        return pa.table({c: pa.array([], pa.null()) for c in schema_columns})
    return pa.concat_tables(tables, promote_options="permissive")
