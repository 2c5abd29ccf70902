"""The results digest of an epoch: recomputed from the tables, by settlement and by the audit alike."""

from __future__ import annotations

import duckdb

from ledger.digest import digest

# Each query lists an epoch's rows in a fixed order; timestamps are left out so replays hash equal.
RESULT_QUERIES = {
    "rewards": "SELECT account_id, role, value, model_score, weight, consensus, incentive, dividends, amount, stake, "
               "validator_trust "
               "FROM rewards WHERE epoch = ? ORDER BY account_id",
    "transfers": "SELECT id, debit_account, debit_bucket, credit_account, credit_bucket, amount, kind, memo "
                 "FROM transfers WHERE epoch = ? ORDER BY id",
    "bonds": "SELECT validator, miner, bond FROM bonds WHERE epoch = ? ORDER BY validator, miner",
    "weights": "SELECT validator, miner, weight FROM weights WHERE epoch = ? ORDER BY validator, miner",
    "validator_reports": "SELECT validator, similarity_to_consensus, similarity_to_own_history FROM validator_reports "
                         "WHERE epoch = ? ORDER BY validator",
    "contributions": "SELECT submission_id, account_id, task, kind, rows, status, reason, digest, duplicate_rows, value "
                     "FROM contributions WHERE epoch = ? ORDER BY submission_id",
}

# Added after epochs were settled without them: hashed only when the epoch has such rows, so the digests of epochs
# settled before they existed (the hash chain) still recompute the same.
LATER_RESULT_QUERIES = {
    "duplicate_sources": "SELECT submission_id, duplicate_of FROM contributions "
                         "WHERE epoch = ? AND duplicate_of IS NOT NULL ORDER BY submission_id",
}


def results_digest(con: duckdb.DuckDBPyConnection, epoch: int) -> str:
    """BLAKE2b of every row an epoch's settlement produced or confirmed."""
    # Tuples encode as JSON arrays exactly as lists do: no per-row copy.
    tables = {name: con.execute(sql, [epoch]).fetchall() for name, sql in RESULT_QUERIES.items()}
    for name, sql in LATER_RESULT_QUERIES.items():
        try:
            rows = con.execute(sql, [epoch]).fetchall()
        except duckdb.BinderException:  # a ledger read before its migration (read-only): it has no such column
            continue
        if rows:
            tables[name] = rows
    return digest(tables)
