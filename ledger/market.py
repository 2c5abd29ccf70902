"""Facts about the market fixed at genesis (the house account's id), kept in the ledger's `market` table."""

from __future__ import annotations

import duckdb

from ledger.errors import LedgerError

HOUSE_ACCOUNT_KEY = "house_account_id"


def set_fact(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    """Record a genesis fact once; recording it again with the same value is a no-op, another value an error."""
    row = con.execute("SELECT value FROM market WHERE key = ?", [key]).fetchone()
    if row is not None:
        if row[0] != value:
            raise LedgerError(f"the ledger's {key} is {row[0]} since genesis; it cannot become {value}")
        return
    con.execute("INSERT INTO market VALUES (?, ?)", [key, value])


def house_account_id(con: duckdb.DuckDBPyConnection) -> str:
    """The house validator's account id, stored at genesis (names are mutable; the id is not)."""
    row = con.execute("SELECT value FROM market WHERE key = ?", [HOUSE_ACCOUNT_KEY]).fetchone()
    if row is not None:
        return row[0]
    # A ledger from before the market table: the house is the first validator registered at genesis.
    row = con.execute("SELECT account_id FROM accounts WHERE role = 'validator' AND registered_epoch = 0 "
                      "ORDER BY rowid LIMIT 1").fetchone()
    if row is None:
        raise LedgerError("the ledger has no house validator; was the home set up at genesis?")
    return row[0]
