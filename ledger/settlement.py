"""Settling an epoch: rewards, payout transfers, bonds and the chain link, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from ledger.db import transaction
from ledger.digest import GENESIS_HASH, chain_hash
from ledger.epochs import current_epoch, get_epoch, last_hash, open_epoch
from ledger.errors import EpochOrderError, SettlementConflict
from ledger.money import largest_remainder
from ledger.results import results_digest
from ledger.schema import EMISSION_ACCOUNT
from ledger.transfers import post

PAYOUT_KINDS = ("incentive", "dividend", "owner_cut")


@dataclass(frozen=True)
class RewardLine:
    """One account's part of an epoch: the figures that explain it and its share of the emission."""

    account_id: str
    role: str  # contributor | validator | owner
    share: float  # fraction of the epoch's emission, >= 0
    kind: str  # the payout transfer's kind: incentive | dividend | owner_cut
    bucket: str = "liquid"  # where the payout lands: validators' dividends compound into stake
    value: float | None = None
    weight: float | None = None
    consensus: float | None = None
    incentive: float | None = None
    dividends: float | None = None
    stake: int | None = None
    validator_trust: float | None = None
    model_score: float | None = None


@dataclass(frozen=True)
class ContributionUpdate:
    submission_id: str
    status: str  # accepted | duplicate
    duplicate_rows: int
    value: float
    duplicate_of: tuple[str, ...] = ()  # earlier submissions its duplicate rows copy


@dataclass(frozen=True)
class Settlement:
    """Everything an epoch's settlement writes, computed before the ledger is touched."""

    epoch: int
    inputs_digest: str
    emission: int  # units minted this epoch, paid out exactly by the lines' shares
    lines: tuple[RewardLine, ...] = ()
    bonds: tuple[tuple[str, str, float], ...] = ()  # (validator, miner, bond)
    weights: tuple[tuple[str, str, float], ...] = ()  # (validator, miner, weight) as used in consensus
    contributions: tuple[ContributionUpdate, ...] = ()
    reports: tuple[tuple[str, float | None, float | None], ...] = ()  # (validator, sim. to consensus, to history)


@dataclass(frozen=True)
class SettleOutcome:
    epoch: int
    settled: bool  # False: the epoch was already settled from the same inputs, nothing written
    hash: str
    amounts: dict[str, int]


def settle_epoch(con: duckdb.DuckDBPyConnection, s: Settlement, *, now: datetime) -> SettleOutcome:
    """Write an epoch's settlement in one transaction and open the next epoch.

    Re-settling with the same inputs digest is a no-op; with another digest it raises SettlementConflict.
    """
    existing = get_epoch(con, s.epoch)
    if existing is not None and existing.settled_at is not None:
        if existing.inputs_digest != s.inputs_digest:
            raise SettlementConflict(s.epoch, existing.inputs_digest, s.inputs_digest)
        amounts = dict(con.execute("SELECT account_id, amount FROM rewards WHERE epoch = ?", [s.epoch]).fetchall())
        return SettleOutcome(s.epoch, False, existing.hash, amounts)
    open_now = current_epoch(con)
    if s.epoch != open_now:
        raise EpochOrderError(f"epoch {s.epoch} cannot settle: epoch {open_now} is the open one, and epochs settle in order")

    amounts_list = largest_remainder([line.share for line in s.lines], s.emission) if s.lines else []
    if not s.lines:
        assert s.emission == 0, "an epoch with no reward lines cannot mint emission"
    with transaction(con):
        for line, amount in zip(s.lines, amounts_list):
            con.execute(
                "INSERT INTO rewards (epoch, account_id, role, value, weight, consensus, incentive, dividends, amount, "
                "stake, validator_trust, model_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [s.epoch, line.account_id, line.role, line.value, line.weight, line.consensus, line.incentive,
                 line.dividends, amount, line.stake, line.validator_trust, line.model_score],
            )
            if amount:
                post(con, epoch=s.epoch, debit=EMISSION_ACCOUNT, credit=line.account_id, amount=amount,
                     kind=line.kind, memo=f"epoch {s.epoch} {line.kind}", credit_bucket=line.bucket)
        if s.bonds:
            con.executemany("INSERT INTO bonds VALUES (?, ?, ?, ?)", [[s.epoch, v, m, b] for v, m, b in s.bonds])
        if s.weights:
            con.executemany("INSERT INTO weights VALUES (?, ?, ?, ?)", [[s.epoch, v, m, w] for v, m, w in s.weights])
        if s.reports:
            con.executemany("INSERT INTO validator_reports VALUES (?, ?, ?, ?)",
                            [[s.epoch, v, c, h] for v, c, h in s.reports])
        for c in s.contributions:
            con.execute(
                "UPDATE contributions SET status = ?, duplicate_rows = ?, value = ?, duplicate_of = ? "
                "WHERE submission_id = ?",
                [c.status, c.duplicate_rows, c.value, list(c.duplicate_of) or None, c.submission_id],
            )
        prev = last_hash(con, s.epoch) or GENESIS_HASH
        results = results_digest(con, s.epoch)
        link = chain_hash(prev, s.epoch, s.inputs_digest, results)
        con.execute(
            "UPDATE epochs SET ends_at = ?, settled_at = ?, inputs_digest = ?, results_digest = ?, prev_hash = ?, "
            "hash = ?, emission = ? WHERE epoch = ?",
            [now, now, s.inputs_digest, results, prev, link, s.emission, s.epoch],
        )
        open_epoch(con, s.epoch + 1, now)
    return SettleOutcome(s.epoch, True, link, {line.account_id: a for line, a in zip(s.lines, amounts_list)})
