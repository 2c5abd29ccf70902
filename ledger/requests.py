"""Signed requests applied to the books: stake, unstake and transfer of the sender's own tokens.

Applied in arrival order inside the transaction that records them, so a request is either applied with its record
or neither is. One the balance cannot cover is refused (recorded as quarantined, with its reason) and moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ledger import accounts, transfers
from ledger.errors import InsufficientFunds

INSUFFICIENT_FUNDS = "insufficient_funds"  # the same codes as pipelines/reasons.py
UNKNOWN_RECIPIENT = "unknown_recipient"


@dataclass(frozen=True)
class Request:
    submission_id: str
    account_id: str
    arrival: int
    file: str
    action: str  # stake | unstake | transfer
    amount_units: int
    to: str | None = None  # transfer: the recipient's public key


def apply_requests(con: duckdb.DuckDBPyConnection, epoch: int, requests: list[Request], *,
                   cooldown_epochs: int) -> dict[str, tuple[str, str]]:
    """Apply each request in arrival order; returns submission_id -> (reason, detail) for those refused."""
    refused: dict[str, tuple[str, str]] = {}
    for r in sorted(requests, key=lambda r: r.arrival):
        counterparty, release = None, None
        try:
            if r.action == "stake":
                transfers.stake(con, r.account_id, r.amount_units, epoch)
            elif r.action == "unstake":
                transfers.unstake(con, r.account_id, r.amount_units, epoch)
                release = epoch + cooldown_epochs
            else:
                recipient = accounts.find(con, r.to or "")
                if recipient is None or recipient.public_key is None or recipient.account_id == r.account_id:
                    refused[r.submission_id] = (UNKNOWN_RECIPIENT, f"{r.file}: field 'to': {(r.to or '')[:16]}… is "
                                                "not another registered account")
                    continue
                counterparty = recipient.account_id
                transfers.post(con, epoch=epoch, debit=r.account_id, credit=counterparty, amount=r.amount_units,
                               kind="transfer", memo=f"request {r.submission_id}")
        except InsufficientFunds as e:
            refused[r.submission_id] = (INSUFFICIENT_FUNDS, f"{r.file}: {r.action} of {r.amount_units} units refused: {e}")
            continue
        con.execute("INSERT INTO requests (submission_id, epoch, account_id, action, amount, counterparty, "
                    "release_epoch, arrival) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [r.submission_id, epoch, r.account_id, r.action, r.amount_units, counterparty, release, r.arrival])
    return refused
