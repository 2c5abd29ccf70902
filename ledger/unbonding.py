"""Unbonding: unstaked tokens wait `unstake_cooldown_epochs` settled epochs, then the settlement releases them."""

from __future__ import annotations

import duckdb

RELEASE_KIND = "release"  # the transfer kind moving unbonding units back to liquid


def due_releases(con: duckdb.DuckDBPyConnection, epoch: int) -> list[tuple[str, int]]:
    """(account, units) whose unbonding ends when `epoch` settles: every unstake released by then, less what earlier
    settlements already released. An unstake landing in epoch E with cooldown c has release_epoch E + c."""
    rows = con.execute(
        """
        WITH due AS (
            SELECT account_id, SUM(amount) AS units FROM requests
            WHERE action = 'unstake' AND release_epoch <= ? GROUP BY account_id
        ), released AS (
            SELECT debit_account AS account_id, SUM(amount) AS units FROM transfers
            WHERE kind = ? AND debit_bucket = 'unbonding' GROUP BY debit_account
        )
        SELECT d.account_id, CAST(d.units - COALESCE(r.units, 0) AS BIGINT) AS owed
        FROM due d LEFT JOIN released r USING (account_id)
        WHERE d.units > COALESCE(r.units, 0) ORDER BY d.account_id
        """,
        [epoch, RELEASE_KIND],
    ).fetchall()
    return [(a, int(u)) for a, u in rows]
