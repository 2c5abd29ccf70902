"""Double-entry transfers: append-only; every balance is derived from them."""

from __future__ import annotations

import duckdb

from ledger.balances import apply_transfers, balance_of
from ledger.errors import InsufficientFunds, LedgerError
from ledger.schema import BUCKETS, EMISSION_ACCOUNT


def post(
    con: duckdb.DuckDBPyConnection,
    *,
    epoch: int,
    debit: str,
    credit: str,
    amount: int,
    kind: str,
    memo: str = "",
    debit_bucket: str = "liquid",
    credit_bucket: str = "liquid",
) -> int:
    """Append one transfer moving `amount` units from debit to credit; returns its id.

    Ids are consecutive in posting order, so the same postings give the same rows on any machine.
    """
    if not isinstance(amount, int) or amount <= 0:
        raise LedgerError(f"transfer amount must be a positive integer of base units, not {amount!r}")
    if debit_bucket not in BUCKETS or credit_bucket not in BUCKETS:
        raise LedgerError(f"buckets must be one of {BUCKETS}")
    if (debit, debit_bucket) == (credit, credit_bucket):
        raise LedgerError("a transfer must move value between two different (account, bucket) pairs")
    if debit != EMISSION_ACCOUNT:
        available = balance(con, debit, debit_bucket)
        if available < amount:
            raise InsufficientFunds(
                f"account {debit} has {available} units {debit_bucket}, {amount} needed for this {kind}"
            )
    next_id = next_transfer_id(con)
    con.execute(
        "INSERT INTO transfers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [next_id, epoch, debit, debit_bucket, credit, credit_bucket, amount, kind, memo],
    )
    apply_transfers(con, "transfers WHERE id = ?", [next_id])
    return next_id


def next_transfer_id(con: duckdb.DuckDBPyConnection) -> int:
    """The id the next transfer gets: one above the largest so far (1 on an empty ledger).

    Ids are max + 1 inside the transaction, not a sequence: DuckDB sequences are not transactional (a rolled-back
    nextval stays consumed), so a crashed and replayed step would get other ids and another results digest.
    """
    (next_id,) = con.execute("SELECT COALESCE(max(id), 0) + 1 FROM transfers").fetchone()
    return next_id


def balance(con: duckdb.DuckDBPyConnection, account_id: str, bucket: str = "liquid", *, before_epoch: int | None = None) -> int:
    """Credits minus debits of one account's bucket (optionally counting only transfers of earlier epochs)."""
    if before_epoch is None:
        return balance_of(con, account_id, bucket)
    sql = """
        SELECT COALESCE(SUM(CASE WHEN credit_account = ? AND credit_bucket = ? THEN amount ELSE 0 END)
                      - SUM(CASE WHEN debit_account = ? AND debit_bucket = ? THEN amount ELSE 0 END), 0)
        FROM transfers WHERE (credit_account = ? OR debit_account = ?)
    """
    params: list = [account_id, bucket, account_id, bucket, account_id, account_id]
    if before_epoch is not None:
        sql += " AND epoch < ?"
        params.append(before_epoch)
    (value,) = con.execute(sql, params).fetchone()
    return int(value)


def stakes_at_epoch_start(con: duckdb.DuckDBPyConnection, epoch: int, role: str | None = "validator") -> dict[str, int]:
    """Staked units of each account of a role (None: every account) from transfers of epochs before `epoch`.

    For validators this is what gives them a say in `epoch`; for contributors, what weights their predictions in
    the meta-model; over every account, each one's vote in governance.
    """
    rows = con.execute(
        """
        WITH moves AS (
            SELECT credit_account AS account_id, amount FROM transfers WHERE credit_bucket = 'staked' AND epoch < ?
            UNION ALL
            SELECT debit_account, -amount FROM transfers WHERE debit_bucket = 'staked' AND epoch < ?
        )
        SELECT a.account_id, CAST(SUM(m.amount) AS BIGINT) FROM moves m JOIN accounts a USING (account_id)
        WHERE ? IS NULL OR a.role = ? GROUP BY a.account_id HAVING SUM(m.amount) > 0 ORDER BY a.account_id
        """,
        [epoch, epoch, role, role],
    ).fetchall()
    return {account_id: int(units) for account_id, units in rows}


def grant(con: duckdb.DuckDBPyConnection, account_id: str, amount: int, epoch: int, memo: str = "") -> int:
    """Mint tokens from the emission account into an account's liquid balance (genesis and operator grants)."""
    return post(con, epoch=epoch, debit=EMISSION_ACCOUNT, credit=account_id, amount=amount, kind="grant", memo=memo)


def stake(con: duckdb.DuckDBPyConnection, account_id: str, amount: int, epoch: int) -> int:
    """Move liquid units to the account's stake; it counts from the next epoch on."""
    return post(con, epoch=epoch, debit=account_id, credit=account_id, amount=amount, kind="stake",
                debit_bucket="liquid", credit_bucket="staked")


def unstake(con: duckdb.DuckDBPyConnection, account_id: str, amount: int, epoch: int) -> int:
    """Move staked units to unbonding: they leave `staked` at once and become liquid after the cooldown
    (ledger/unbonding.py; the caller records the request that says when)."""
    return post(con, epoch=epoch, debit=account_id, credit=account_id, amount=amount, kind="unstake",
                debit_bucket="staked", credit_bucket="unbonding")
