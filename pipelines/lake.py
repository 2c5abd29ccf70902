"""The lake's layout and its reads: where a submission's rows land and how they are read back."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

WEIGHTS_LAKE_DIR = "_weights"  # the lake task directory of weights and requests (their manifests say task "-")
ID_COLUMNS = ("_submission_id", "_contributor", "_row")  # added to every landed table
ROW_HASH_COLUMN = "_row_hash"  # datasets only: rewards.duplicates.row_hashes of features and label


def lake_path(lake: str, epoch: int, kind: str, task: str, digest: str, public_key: str) -> str:
    """Where a submission's rows live: addressed by payload digest and sender within epoch, kind and task.

    The sender is part of the address because the landed rows carry it: a copy of someone else's file from
    another key is other content, and must land so that scoring can find it a duplicate.
    """
    task_dir = WEIGHTS_LAKE_DIR if kind in ("weights", "request") else task
    return f"{lake.rstrip('/')}/epoch={epoch}/kind={kind}/task={task_dir}/{digest}-{public_key[:16]}.parquet"


MAX_LAKE_CACHE_BYTES = 512 * 2**20
"""Decoded lake tables kept in memory per process (bytes of Arrow data). Every epoch's valuation reads the whole lake,
and so does each validator valuing on its own sample; landed files never change, so a second read is a lookup."""

_cache: OrderedDict[tuple, pa.Table] = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def read_lake_file(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One landed submission's rows (optionally only some columns).

    Local files are cached (up to MAX_LAKE_CACHE_BYTES, least recently used out first), keyed by path, columns and
    the file's inode, size and change time, so a file replaced under the same name is read afresh.
    """
    import pyarrow.parquet as pq

    cols = list(columns) if columns is not None else None
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # not a local path (a remote filesystem): no cache
        return pq.read_table(str(path), columns=cols)
    key = (str(path), tuple(cols) if cols is not None else None, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    global _cache_bytes
    with _cache_lock:
        table = _cache.get(key)
        if table is not None:
            _cache.move_to_end(key)
            return table
    table = pq.read_table(str(path), columns=cols)
    with _cache_lock:
        if key not in _cache and table.nbytes <= MAX_LAKE_CACHE_BYTES:
            _cache[key] = table
            _cache_bytes += table.nbytes
            while _cache_bytes > MAX_LAKE_CACHE_BYTES:
                _, old = _cache.popitem(last=False)
                _cache_bytes -= old.nbytes
    return table


def read_lake_files(paths: Sequence[str | Path], schema_columns: Sequence[str]) -> pa.Table:
    """Several landed submissions' rows concatenated; an empty table with `schema_columns` when there are none."""
    tables = [read_lake_file(p, schema_columns) for p in paths]
    if not tables:
        return pa.table({c: pa.array([], pa.null()) for c in schema_columns})
    return pa.concat_tables(tables, promote_options="permissive")
