"""What earlier epochs left that the next one reads: bonds to carry, the last public consensus, each validator's
last weights. Read-only queries, so the stages hold no ledger SQL."""

from __future__ import annotations

import duckdb


def previous_bonds(con: duckdb.DuckDBPyConnection, epoch: int) -> list[tuple[str, str, float]]:
    """(validator, miner, bond) of the latest epoch before `epoch` that stored bonds."""
    return con.execute(
        "SELECT validator, miner, bond FROM bonds WHERE epoch = (SELECT max(epoch) FROM bonds WHERE epoch < ?)",
        [epoch]).fetchall()


def last_public_consensus(con: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, float]:
    """contributor account -> consensus weight of the latest settled epoch before `epoch` (empty before any)."""
    last = con.execute("SELECT max(epoch) FROM rewards WHERE epoch < ?", [epoch]).fetchone()[0]
    if last is None:
        return {}
    return dict(con.execute("SELECT account_id, consensus FROM rewards WHERE epoch = ? AND role = 'contributor'",
                            [last]).fetchall())


def last_own_weights(con: duckdb.DuckDBPyConnection, epoch: int) -> list[tuple[str, str, float]]:
    """(validator, miner, weight) of each validator's latest epoch before `epoch` in which it weighed in."""
    return con.execute(
        "SELECT validator, miner, weight FROM weights w WHERE epoch = "
        "(SELECT max(epoch) FROM weights x WHERE x.validator = w.validator AND x.epoch < ?)", [epoch]).fetchall()
