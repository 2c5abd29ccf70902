"""Read-only SQL for analysts, and the Parquet/DuckDB export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from ledger.db import open_ledger, snapshot_path

EXPORT_TABLES = ("accounts", "epochs", "contributions", "quarantine", "rewards", "transfers", "bonds", "weights",
                 "commitments", "validator_reports", "arrivals", "balance_totals", "market", "requests", "proposals",
                 "votes", "epoch_parameters", "epoch_values")
# The views users ask (ledger/views.py), exported as their rows: a reader of the export needs no view definitions.
EXPORT_VIEWS = ("balances", "stakes", "leaderboard", "explain", "originality", "epoch_value", "emission_by_epoch",
                "parameters", "validator_report")
EXPORT_STORAGE_VERSION = "v1.5.0"  # lets the PyPI duckdb-cli (1.5.x) open the exported file


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    source: str = ""  # what was read: the snapshot and the epoch it ends at, or the live ledger


def run_sql(ledger_path: Path, sql: str) -> QueryResult:
    """Run one query, read-only, on the snapshot every writer refreshes as it commits: a query never waits for the
    pipeline, never holds a lock the pipeline needs, and sees one consistent state. A ledger from before snapshots
    is read live."""
    snapshot = snapshot_path(ledger_path)
    path = snapshot if snapshot.exists() else ledger_path
    with open_ledger(path, read_only=True) as con:
        cur = con.execute(sql)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchall() if columns else []
        settled, open_epoch = con.execute(
            "SELECT max(epoch) FILTER (WHERE settled_at IS NOT NULL), min(epoch) FILTER (WHERE settled_at IS NULL) "
            "FROM epochs").fetchone()
    where = "snapshot" if path == snapshot else "live ledger"
    return QueryResult(columns, rows, f"{where}: epochs settled through {settled}, epoch {open_epoch} open")


def export(ledger_path: Path, out_dir: Path) -> list[Path]:
    """Write every table and view as Parquet, plus `ledger.duckdb` readable by the DuckDB CLI."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with open_ledger(ledger_path, read_only=True) as con:
        # A ledger read before its latest migration (export never migrates) lacks the newest tables and views.
        present = {n for (n,) in con.execute("SELECT table_name FROM duckdb_tables() UNION "
                                             "SELECT view_name FROM duckdb_views()").fetchall()}
        names = [n for n in (*EXPORT_TABLES, *EXPORT_VIEWS) if n in present]
        for name in names:
            path = out_dir / f"{name}.parquet"
            con.execute(f"COPY (SELECT * FROM {name}) TO '{sql_path(path)}' (FORMAT parquet)")
            written.append(path)
    db_path = out_dir / "ledger.duckdb"
    db_path.unlink(missing_ok=True)
    out = duckdb.connect(str(db_path), config={"storage_compatibility_version": EXPORT_STORAGE_VERSION})
    try:
        for name in names:
            out.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{sql_path(out_dir / f'{name}.parquet')}')")
    finally:
        out.close()
    written.append(db_path)
    return written


def sql_path(path: Path) -> str:
    """A path as the inside of a SQL string literal (quotes doubled), for COPY and read_parquet."""
    return str(path).replace("'", "''")


# Named queries: what the demo and `epoch run` print, and what the README suggests analysts try.
LEADERBOARD_SQL = """
SELECT a.name, c.account_id,
       SUM(CASE WHEN c.status = 'accepted' THEN c.rows - COALESCE(c.duplicate_rows, 0) ELSE 0 END) AS rows_accepted,
       SUM(COALESCE(c.duplicate_rows, 0)) AS duplicate_rows,
       COUNT(*) FILTER (WHERE c.status = 'quarantined') AS quarantined,
       ROUND(SUM(COALESCE(c.value, 0)), 6) AS value,
       (SELECT COALESCE(SUM(r.amount), 0) FROM rewards r WHERE r.account_id = c.account_id) AS earned_units
FROM contributions c JOIN accounts a USING (account_id)
WHERE c.kind = 'dataset'
GROUP BY a.name, c.account_id
ORDER BY earned_units DESC, a.name
""".strip()

VALIDATORS_SQL = """
SELECT a.name, r.epoch, r.stake AS stake_units, ROUND(r.weight, 6) AS active_stake, ROUND(r.validator_trust, 6) AS vtrust,
       ROUND(r.dividends, 6) AS dividends, r.amount AS earned_units
FROM rewards r JOIN accounts a USING (account_id)
WHERE r.role = 'validator'
ORDER BY r.epoch, a.name
""".strip()

QUARANTINE_SQL = """
SELECT q.epoch, COALESCE(a.name, '?') AS name, q.file, q.reason, q.detail
FROM quarantine q LEFT JOIN accounts a USING (account_id)
ORDER BY q.epoch, q.received_at, q.file
""".strip()
