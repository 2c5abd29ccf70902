"""Opening the ledger file: one writer, brief read-only readers, lock errors retried then named."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ledger.errors import LedgerBusy
from ledger.schema import migrate

LOCK_RETRY_SECONDS = 10.0
LOCK_RETRY_STEP_SECONDS = 0.1
SNAPSHOT_SUFFIX = ".snapshot.duckdb"  # ledger.duckdb -> ledger.snapshot.duckdb: what `tributary sql` reads


def connect(path: Path, *, read_only: bool = False, retry_seconds: float = LOCK_RETRY_SECONDS) -> duckdb.DuckDBPyConnection:
    """Open the ledger, retrying while another process holds the lock; migrates on a read-write open."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            if time.monotonic() >= deadline:
                raise LedgerBusy(
                    f"{path}: another process is writing the ledger (an epoch run or the Dagster UI); "
                    f"try again when it finishes. DuckDB said: {e}"
                ) from None
            time.sleep(LOCK_RETRY_STEP_SECONDS)
    if not read_only:
        migrate(con)
    return con


def snapshot_path(ledger: Path) -> Path:
    """Where the readers' copy of the ledger lives: beside it, refreshed by every writer when it closes."""
    return ledger.with_name(ledger.stem + SNAPSHOT_SUFFIX)


def refresh_snapshot(con: duckdb.DuckDBPyConnection, ledger: Path) -> None:
    """Copy the ledger, as committed, to its snapshot: checkpointed, then copied while this connection still holds
    DuckDB's write lock (no other writer can change the file mid-copy), then renamed into place atomically, so a
    reader sees the old snapshot or the new one, never a torn file. A snapshot that is already a copy of the
    checkpointed file (the writer changed nothing) is left as it is."""
    con.execute("CHECKPOINT")
    target = snapshot_path(ledger)
    if _snapshot_is_current(ledger, target):
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(ledger, tmp)
    os.replace(tmp, target)


HEADER_BYTES = 3 * 4096  # a DuckDB file's main header and its two database headers (checkpoint iteration, root)


def _snapshot_is_current(ledger: Path, target: Path) -> bool:
    """Whether the snapshot is already a copy of the checkpointed ledger, so a writer that changed nothing need not
    copy it again. Every test must agree, else it is copied as before: no write-ahead log left, the same size, the
    ledger last written before the snapshot was, and the same file headers (DuckDB writes new headers, with the
    next checkpoint iteration, whenever a checkpoint changes the file)."""
    try:
        if Path(f"{ledger}.wal").exists():
            return False
        src, dst = ledger.stat(), target.stat()
        if src.st_size != dst.st_size or src.st_mtime_ns >= dst.st_mtime_ns:
            return False
        with open(ledger, "rb") as a, open(target, "rb") as b:
            head = a.read(HEADER_BYTES)
            return len(head) == HEADER_BYTES and head == b.read(HEADER_BYTES)
    except OSError:
        return False


@contextmanager
def open_ledger(path: Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A ledger connection that is closed on exit, so the file lock is held only as long as needed; a writer
    refreshes the readers' snapshot before it lets go."""
    con = connect(path, read_only=read_only)
    try:
        yield con
        if not read_only:
            try:
                refresh_snapshot(con, path)
            except duckdb.ConnectionException:  # the caller closed it: nothing it wrote after that to copy
                pass
    finally:
        con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN … COMMIT, rolled back on any error: a partial epoch never reaches the file."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def arrow_table(columns: dict[str, tuple["pa.DataType", list]]) -> "pa.Table":
    """Columns given as name: (Arrow type, values), as one Arrow table (pyarrow is imported only by writers)."""
    import pyarrow as pa

    return pa.table({name: pa.array(values, type=t) for name, (t, values) in columns.items()})


def complete_pending(con: duckdb.DuckDBPyConnection) -> None:
    """Run an earlier execute()'s result to its end (it changes nothing): DuckDB 2 refuses register() and sql()
    while one has rows left unread, which a fetchone() leaves."""
    complete = getattr(con, "complete", None)
    if complete is not None:
        complete()


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, view: str, data: "pa.Table") -> Iterator[str]:
    """`data` as a view for one statement. If that statement fails inside the transaction, unregistering raises a
    TransactionException; the statement's own error must surface, so that one is not raised over it (the view is
    replaced on the next register)."""
    complete_pending(con)
    con.register(view, data)
    try:
        yield view
    finally:
        try:
            con.unregister(view)
        except duckdb.TransactionException:
            pass


def insert_columns(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, tuple["pa.DataType", list]]) -> None:
    """INSERT the rows given column by column (name: (Arrow type, values)) in one statement; nothing if empty."""
    data = arrow_table(columns)
    if data.num_rows == 0:
        return
    names = ", ".join(data.column_names)
    with registered(con, f"_insert_{table}", data) as view:
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {view}")
