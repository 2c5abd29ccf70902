"""Signed requests applied to the books: stake, unstake and transfer of the sender's own tokens, auto-staking of
rewards, and governance (propose, vote).

Applied in arrival order inside the transaction that records them, so a request is either applied with its record
or neither is. One the books refuse (a balance that cannot cover it, a setting nobody may vote on, a vote on a
tallied proposal) is recorded as quarantined, with its reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import duckdb

from ledger import accounts, governance, transfers
from ledger.errors import InsufficientFunds
from protocol.reasons import INSUFFICIENT_FUNDS, KIND_NOT_ALLOWED, UNKNOWN_RECIPIENT


@dataclass(frozen=True)
class Request:
    submission_id: str
    account_id: str
    arrival: int
    file: str
    action: str  # stake | unstake | transfer | auto_stake | propose | vote
    amount_units: int | None = None
    to: str | None = None  # transfer: the recipient's public key
    enabled: bool | None = None  # auto_stake
    setting: str | None = None  # propose
    value: str | None = None  # propose: JSON text
    proposal_id: int | None = None  # vote
    vote: str | None = None  # vote: yes | no


def apply_requests(con: duckdb.DuckDBPyConnection, epoch: int, requests: list[Request], *, cooldown_epochs: int,
                   tasks: Collection[str] = ()) -> dict[str, tuple[str, str]]:
    """Apply each request in arrival order; returns submission_id -> (reason, detail) for those refused."""
    refused: dict[str, tuple[str, str]] = {}
    roles = {a.account_id: a.role for a in accounts.all_accounts(con)}
    for r in sorted(requests, key=lambda r: r.arrival):
        try:
            applied = _apply(con, epoch, r, roles.get(r.account_id, ""), cooldown_epochs, tasks)
        except InsufficientFunds as e:
            refused[r.submission_id] = (INSUFFICIENT_FUNDS, f"{r.file}: {r.action} of {r.amount_units} units refused: {e}")
            continue
        except governance.GovernanceError as e:
            refused[r.submission_id] = (e.reason, f"{r.file}: {r.action} refused: {e.detail}")
            continue
        except _Refused as e:
            refused[r.submission_id] = (e.reason, f"{r.file}: {e.detail}")
            continue
        con.execute("INSERT INTO requests (submission_id, epoch, account_id, action, amount, counterparty, setting, "
                    "value, proposal_id, vote, release_epoch, arrival) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    [r.submission_id, epoch, r.account_id, r.action, r.amount_units, applied.counterparty,
                     r.setting, applied.value, applied.proposal_id, r.vote, applied.release, r.arrival])
    return refused


@dataclass(frozen=True)
class _Applied:
    counterparty: str | None = None
    release: int | None = None
    proposal_id: int | None = None
    value: str | None = None


class _Refused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _apply(con: duckdb.DuckDBPyConnection, epoch: int, r: Request, role: str, cooldown_epochs: int,
           tasks: Collection[str]) -> _Applied:
    if r.action == "stake":
        transfers.stake(con, r.account_id, r.amount_units, epoch)
        return _Applied()
    if r.action == "unstake":
        transfers.unstake(con, r.account_id, r.amount_units, epoch)
        return _Applied(release=epoch + cooldown_epochs)
    if r.action == "transfer":
        recipient = accounts.find(con, r.to or "")
        if recipient is None or recipient.public_key is None or recipient.account_id == r.account_id:
            raise _Refused(UNKNOWN_RECIPIENT, f"field 'to': {(r.to or '')[:16]}… is not another registered account")
        transfers.post(con, epoch=epoch, debit=r.account_id, credit=recipient.account_id, amount=r.amount_units,
                       kind="transfer", memo=f"request {r.submission_id}")
        return _Applied(counterparty=recipient.account_id)
    if r.action == "auto_stake":
        if role != "contributor":
            raise _Refused(KIND_NOT_ALLOWED, f"field 'action': auto_stake is for contributors' rewards; {r.account_id} is "
                                        f"a {role} (validators' dividends always compound into stake)")
        con.execute("UPDATE accounts SET auto_stake = ? WHERE account_id = ?", [bool(r.enabled), r.account_id])
        return _Applied(value="true" if r.enabled else "false")
    if r.action == "propose":
        pid, value = governance.propose(con, epoch=epoch, submission_id=r.submission_id, proposer=r.account_id,
                                        role=role, setting=r.setting or "", value=r.value or "", arrival=r.arrival,
                                        tasks=tasks)
        return _Applied(proposal_id=pid, value=value)
    if r.action == "vote":
        governance.vote(con, epoch=epoch, submission_id=r.submission_id, voter=r.account_id,
                        proposal_id=int(r.proposal_id or 0), choice=r.vote or "", arrival=r.arrival)
        return _Applied(proposal_id=r.proposal_id)
    raise AssertionError(f"unknown request action {r.action!r}")  # parse_request admits only the actions above
