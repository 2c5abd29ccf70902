"""Read-only SQL for analysts, and the Parquet/DuckDB export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from ledger.db import open_ledger

EXPORT_TABLES = ("accounts", "epochs", "contributions", "quarantine", "rewards", "transfers", "bonds", "weights")
EXPORT_STORAGE_VERSION = "v1.5.0"  # lets the PyPI duckdb-cli (1.5.x) open the exported file


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]


def run_sql(ledger_path: Path, sql: str) -> QueryResult:
    """Run one query on a read-only connection; writes are refused by DuckDB itself."""
    with open_ledger(ledger_path, read_only=True) as con:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        return QueryResult(columns, cur.fetchall() if columns else [])


def export(ledger_path: Path, out_dir: Path) -> list[Path]:
    """Write every table and the balances view as Parquet, plus `ledger.duckdb` readable by the DuckDB CLI."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open_ledger(ledger_path, read_only=True) as con:
        for name in (*EXPORT_TABLES, "balances"):
            path = out_dir / f"{name}.parquet"
            con.execute(f"COPY (SELECT * FROM {name}) TO '{_sql_path(path)}' (FORMAT parquet)")
            written.append(path)
    db_path = out_dir / "ledger.duckdb"
    db_path.unlink(missing_ok=True)
    out = duckdb.connect(str(db_path), config={"storage_compatibility_version": EXPORT_STORAGE_VERSION})
    try:
        for name in (*EXPORT_TABLES, "balances"):
            out.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{_sql_path(out_dir / f'{name}.parquet')}')")
    finally:
        out.close()
    written.append(db_path)
    return written


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")
