"""Signed requests applied to the books: stake, unstake and transfer of the sender's own tokens, auto-staking of
rewards, governance (propose, vote), and open registration (register: an unknown key registers itself).

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
from protocol.reasons import (
    ALREADY_REGISTERED, BAD_PROOF_OF_WORK, INSUFFICIENT_FUNDS, KIND_NOT_ALLOWED, NAME_TAKEN, REGISTRATION_CLOSED,
    UNKNOWN_RECIPIENT,
)
from protocol.registration import POW_EPOCHS_ACCEPTED, pow_bits_of


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
    public_key: str | None = None  # register: the signer's key (account_id is "" while it has no account)
    role: str | None = None  # register
    name: str | None = None  # register
    pow_epoch: int | None = None  # register: the epoch the proof of work is bound to
    pow_nonce: int | None = None  # register


@dataclass(frozen=True)
class Registration:
    """The rules a register request is held to at the epoch it lands in (settings_at: pow bits and fee governed)."""

    open: bool = False  # settings `registration = "open"`
    fee_units: int = 0  # registration_fee_units: above 0, self-registration is closed (no sponsor signs for it)
    pow_bits: int = 16  # registration_pow_bits


def apply_requests(con: duckdb.DuckDBPyConnection, epoch: int, requests: list[Request], *, cooldown_epochs: int,
                   tasks: Collection[str] = (), registration: Registration = Registration()) -> dict[str, tuple[str, str]]:
    """Apply each request in arrival order; returns submission_id -> (reason, detail) for those refused.

    A register request that is applied creates its account (an `accounts` row, as `tributary register` does) and
    no `requests` row; its record in `contributions` carries the new account's id."""
    refused: dict[str, tuple[str, str]] = {}
    roles = {a.account_id: a.role for a in accounts.all_accounts(con)}
    for r in sorted(requests, key=lambda r: r.arrival):
        if r.action == "register":
            try:
                _register(con, epoch, r, registration)
            except _Refused as e:
                refused[r.submission_id] = (e.reason, f"{r.file}: {e.detail}")
            continue
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


def _register(con: duckdb.DuckDBPyConnection, epoch: int, r: Request, rules: Registration) -> None:
    """Open registration (docs/PROTOCOL.md §6, `register`): checked in this order, the first failure refuses it."""
    key = (r.public_key or "").lower()
    row = con.execute("SELECT account_id FROM accounts WHERE public_key = ?", [key]).fetchone()
    existing = accounts.get(con, row[0]) if row else None
    if existing is not None:
        raise _Refused(ALREADY_REGISTERED, f"key {key[:16]}… is already registered as {existing.role} "
                                           f"({existing.name!r}); a key registers once")
    if not rules.open:
        raise _Refused(REGISTRATION_CLOSED, "registration is by the operator on this market (setting registration "
                                            "= \"operator\"); ask the operator to run `tributary register`")
    if rules.fee_units > 0:
        raise _Refused(REGISTRATION_CLOSED, f"registration costs a fee of {rules.fee_units} base units "
                                            "(registration_fee_units) that a self-registration has no sponsor to "
                                            "pay; ask the operator to register the key with --fee-from")
    oldest = epoch - (POW_EPOCHS_ACCEPTED - 1)
    if r.pow_epoch is None or not oldest <= r.pow_epoch <= epoch:
        raise _Refused(BAD_PROOF_OF_WORK, f"field 'epoch': the proof is bound to epoch {r.pow_epoch}, but only the "
                                          f"open epoch {epoch} or the one before it ({oldest}) is accepted; "
                                          "compute a new proof")
    bits = pow_bits_of(key, r.pow_epoch, r.pow_nonce if r.pow_nonce is not None else -1)
    if bits < rules.pow_bits:
        raise _Refused(BAD_PROOF_OF_WORK, f"field 'pow_nonce': BLAKE2b-256 of the proof for key {key[:16]}… and "
                                          f"epoch {r.pow_epoch} has {bits} leading zero bits, "
                                          f"registration_pow_bits = {rules.pow_bits} are required")
    account_id = accounts.account_id_for(key)
    taken = accounts.find(con, account_id)  # by id, key or name: a new id must not name anything already
    if taken is not None:
        raise _Refused(ALREADY_REGISTERED, f"account id {account_id} (the key's first 16 hex digits) already names "
                                           f"account {taken.name!r}; register another key")
    if accounts.find(con, r.name or "") is not None:  # a name must not be any account's name, id or key either
        raise _Refused(NAME_TAKEN, f"field 'name': {r.name!r} already names another account; pick another")
    accounts.register(con, key, r.name or "", r.role or "", epoch)


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
