"""Accounts: a public key with a local name and a role; system accounts for emission and the owner."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ledger.errors import LedgerError, UnknownAccount
from ledger.schema import BURN_ACCOUNT, EMISSION_ACCOUNT, OWNER_ACCOUNT

ROLES = ("contributor", "validator")
ACCOUNT_ID_HEX_CHARS = 16  # account ids are the key's first 64 bits, short enough to read in SQL


@dataclass(frozen=True)
class Account:
    account_id: str
    public_key: str | None
    name: str
    role: str
    registered_epoch: int


def account_id_for(public_key: str) -> str:
    """The account id a public key gets: its first 16 hex digits."""
    return public_key[:ACCOUNT_ID_HEX_CHARS].lower()


def ensure_system_accounts(con: duckdb.DuckDBPyConnection) -> None:
    """Create the emission, owner and burn accounts once."""
    for account_id, role in ((EMISSION_ACCOUNT, "system"), (OWNER_ACCOUNT, "owner"), (BURN_ACCOUNT, "system")):
        con.execute(
            "INSERT INTO accounts (account_id, public_key, name, role, registered_epoch) VALUES (?, NULL, ?, ?, 0) "
            "ON CONFLICT DO NOTHING", [account_id, account_id, role]
        )


def register(con: duckdb.DuckDBPyConnection, public_key: str, name: str, role: str, epoch: int) -> Account:
    """Register a key under a role; registering the same key again with the same role is a no-op."""
    if role not in ROLES:
        raise LedgerError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    public_key = public_key.lower()
    existing = find(con, public_key)
    if existing is not None:
        if existing.role != role:
            raise LedgerError(
                f"key {public_key[:16]}… is already registered as {existing.role} ({existing.name!r}); "
                "use another key for another role"
            )
        return existing
    if con.execute("SELECT 1 FROM accounts WHERE name = ?", [name]).fetchone():
        raise LedgerError(f"the name {name!r} is already taken by another key; pick another name")
    account = Account(account_id_for(public_key), public_key, name, role, epoch)
    con.execute(
        "INSERT INTO accounts (account_id, public_key, name, role, registered_epoch) VALUES (?, ?, ?, ?, ?)",
        [account.account_id, account.public_key, account.name, account.role, account.registered_epoch],
    )
    # Its kept balance starts at zero now, so a settlement that pays it updates a row instead of inserting one
    # (at a million accounts, inserts into the balances' key index were half of what a settlement writes).
    con.execute("INSERT INTO balance_totals (account_id) VALUES (?) ON CONFLICT DO NOTHING", [account.account_id])
    return account


def find(con: duckdb.DuckDBPyConnection, ref: str) -> Account | None:
    """Look an account up by id, public key or name."""
    row = con.execute(
        "SELECT account_id, public_key, name, role, registered_epoch FROM accounts "
        "WHERE account_id = ? OR public_key = ? OR name = ? ORDER BY account_id LIMIT 1",
        [ref.lower(), ref.lower(), ref],
    ).fetchone()
    return Account(*row) if row else None


def get(con: duckdb.DuckDBPyConnection, ref: str) -> Account:
    """Like `find`, but a missing account is an error that says how to register."""
    account = find(con, ref)
    if account is None:
        raise UnknownAccount(f"no account {ref!r} in the ledger; register it with `tributary register NAME --role ...`")
    return account


def all_accounts(con: duckdb.DuckDBPyConnection, role: str | None = None) -> list[Account]:
    """Every account (optionally of one role), ordered by id."""
    sql = "SELECT account_id, public_key, name, role, registered_epoch FROM accounts"
    rows = con.execute(sql + (" WHERE role = ?" if role else "") + " ORDER BY account_id", [role] if role else []).fetchall()
    return [Account(*r) for r in rows]


def auto_staking(con: duckdb.DuckDBPyConnection) -> frozenset[str]:
    """Contributors who asked (a signed auto_stake request) for their rewards to land in their stake."""
    return frozenset(a for (a,) in con.execute("SELECT account_id FROM accounts WHERE auto_stake").fetchall())


def burn_fee(con: duckdb.DuckDBPyConnection, payer: str, registered: str, fee_units: int, epoch: int) -> None:
    """Burn a registration fee from the payer's liquid balance (InsufficientFunds if it cannot) and note it on the
    registered account."""
    from ledger import transfers
    from ledger.schema import BURN_ACCOUNT

    transfers.post(con, epoch=epoch, debit=payer, credit=BURN_ACCOUNT, amount=fee_units, kind="registration_fee",
                   memo=f"registration of {registered}")
    con.execute("UPDATE accounts SET fee_units = ? WHERE account_id = ?", [fee_units, registered])
