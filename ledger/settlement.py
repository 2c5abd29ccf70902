"""Settling an epoch: rewards, payout transfers, bonds, contributions' final figures, what the epoch added per task
(epoch_values) and the chain link, in one transaction."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ledger.balances import apply_payouts, apply_transfers
from ledger.db import arrow_table, complete_pending, insert_columns, registered, transaction
from ledger.digest import GENESIS_HASH, chain_hash, digest_text, epoch_signing_message
from ledger.epoch_values import EpochValue
from ledger.epochs import current_epoch, get_epoch, last_hash, open_epoch
from ledger.errors import DuplicateRewardLine, EpochOrderError, SettlementConflict
from ledger.governance import Tally, record_tallies
from ledger.money import largest_remainder_array
from ledger.results import (RESULT_REWARD_COLUMNS, RESULT_TABLES, RESULT_TRANSFER_COLUMNS, RESULTS_VERSION,
                            columns_digest, result_tables)
from ledger.schema import EMISSION_ACCOUNT
from ledger.transfers import next_transfer_id
from ledger.unbonding import RELEASE_KIND

PAYOUT_KINDS = ("incentive", "dividend", "owner_cut")
INPUTS_VERSION = 1  # epochs.inputs_version: the epoch's inputs document is in epoch_inputs


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
    status: str  # accepted | duplicate | unoriginal (zeroed as a whole by the originality gate)
    duplicate_rows: int
    value: float
    duplicate_of: tuple[str, ...] = ()  # earlier submissions its duplicate rows copy
    # Originality (rewards.originality), None where not measured (predictions): rows judged (those that could earn),
    # unoriginal (earn 0), below the gate's level; the gate's p-value, the median p-value of its judged rows, and its
    # value in the same game without the originality rules.
    judged_rows: int | None = None
    unoriginal_rows: int | None = None
    gate_rows: int | None = None
    originality_p: float | None = None
    median_p: float | None = None
    value_without_originality: float | None = None


@dataclass(frozen=True)
class Settlement:
    """Everything an epoch's settlement writes, computed before the ledger is touched."""

    epoch: int
    inputs_digest: str
    emission: int  # units minted this epoch, paid out exactly by the lines' shares
    lines: tuple[RewardLine, ...] | pa.Table = ()  # or the same fields as Arrow columns (LINE_SCHEMA), at scale
    bonds: tuple[tuple[str, str, float], ...] = ()  # (validator, miner, bond)
    weights: tuple[tuple[str, str, float], ...] = ()  # (validator, miner, weight) as used in consensus
    contributions: tuple[ContributionUpdate, ...] = ()
    reports: tuple[tuple[str, float | None, float | None], ...] = ()  # (validator, sim. to consensus, to history)
    releases: tuple[tuple[str, int], ...] = ()  # (account, units) leaving unbonding for liquid at this settlement
    tallies: tuple[Tally, ...] = ()  # the proposals made in this epoch, counted
    parameters: tuple[tuple[str, str, int | None], ...] = ()  # governed settings in force: (setting, JSON, proposal)
    inputs_document: str | None = None  # the canonical JSON inputs_digest hashes, kept in epoch_inputs for audit
    epoch_values: tuple[EpochValue, ...] = ()  # per task: what the epoch's rows added to the lake (epoch_values)


@dataclass(frozen=True)
class SettleOutcome:
    epoch: int
    settled: bool  # False: the epoch was already settled from the same inputs, nothing written
    hash: str
    paid: pa.Table  # account_id, amount: each reward line's units

    @property
    def amounts(self) -> dict[str, int]:
        """account_id -> units paid (built on demand: a million-entry dict costs half a second)."""
        return dict(zip(self.paid.column("account_id").to_pylist(), self.paid.column("amount").to_pylist()))


def settle_epoch(con: duckdb.DuckDBPyConnection, s: Settlement, *, now: datetime,
                 sign: Callable[[bytes], str] | None = None) -> SettleOutcome:
    """Write an epoch's settlement in one transaction and open the next epoch.

    `sign`: the operator's signer (message -> Ed25519 signature hex) of the epoch's chain hash
    (digest.epoch_signing_message), kept in epochs.operator_signature; None leaves it NULL.

    Re-settling with the same inputs digest is a no-op; with another digest it raises SettlementConflict.
    """
    existing = get_epoch(con, s.epoch)
    if existing is not None and existing.settled_at is not None:
        if existing.inputs_digest != s.inputs_digest:
            raise SettlementConflict(s.epoch, existing.inputs_digest, s.inputs_digest)
        complete_pending(con)
        paid = con.sql("SELECT account_id, amount FROM rewards WHERE epoch = ?", params=[s.epoch]).to_arrow_table()
        return SettleOutcome(s.epoch, False, existing.hash, paid)
    open_now = current_epoch(con)
    if s.epoch != open_now:
        raise EpochOrderError(f"epoch {s.epoch} cannot settle: epoch {open_now} is the open one, and epochs settle in order")

    if s.inputs_document is not None:
        assert digest_text(s.inputs_document) == s.inputs_digest, "the inputs document must hash to inputs_digest"
    lines = s.lines if isinstance(s.lines, pa.Table) else reward_lines(s.lines)
    lines = lines.select(LINE_SCHEMA.names).cast(LINE_SCHEMA)
    assert lines.column("share").null_count == 0, "every reward line needs a share"
    order = _account_order(s.epoch, lines)
    if lines.num_rows:
        amounts = largest_remainder_array(lines.column("share").to_numpy(), s.emission)
    else:
        assert s.emission == 0, "an epoch with no reward lines cannot mint emission"
        amounts = np.zeros(0, dtype=np.int64)
    line_table = lines.append_column("amount", pa.array(amounts, type=pa.int64()))
    with transaction(con):
        # Each table is written in one statement from Arrow: row-at-a-time statements were most of a settlement's time.
        with registered(con, "_settle_lines", line_table) as view:
            con.execute(f"INSERT INTO rewards (epoch, {', '.join(REWARD_COLUMNS)}, amount) "
                        f"SELECT ?, {', '.join(REWARD_COLUMNS)}, amount FROM {view}", [s.epoch])
        # Payouts are the lines with an amount, minted from emission (no balance to check): ids consecutive in line
        # order, every column ready in Arrow so the rows go in as they are.
        payouts = line_table if bool(np.all(amounts > 0)) else line_table.filter(pc.greater(line_table.column("amount"), 0))
        first_id = next_transfer_id(con)
        payout_rows = _payout_transfers(s.epoch, payouts, first_id)
        if payout_rows.num_rows:
            with registered(con, "_settle_payouts", payout_rows) as view:
                names = ", ".join(payout_rows.column_names)
                con.execute(f"INSERT INTO transfers ({names}) SELECT {names} FROM {view}")
            with registered(con, "_settle_moves", payouts.select(["account_id", "bucket", "amount"])) as view:
                apply_payouts(con, view, EMISSION_ACCOUNT, s.emission)
        if s.releases:  # unbonding that has served its cooldown becomes liquid, one transfer per account
            next_id = next_transfer_id(con)
            insert_columns(con, "transfers", {
                "id": (pa.int64(), list(range(next_id, next_id + len(s.releases)))),
                "epoch": (pa.int64(), [s.epoch] * len(s.releases)),
                "debit_account": (pa.string(), [a for a, _ in s.releases]),
                "debit_bucket": (pa.string(), ["unbonding"] * len(s.releases)),
                "credit_account": (pa.string(), [a for a, _ in s.releases]),
                "credit_bucket": (pa.string(), ["liquid"] * len(s.releases)),
                "amount": (pa.int64(), [u for _, u in s.releases]),
                "kind": (pa.string(), [RELEASE_KIND] * len(s.releases)),
                "memo": (pa.string(), [f"epoch {s.epoch} unbonding released"] * len(s.releases)),
            })
            apply_transfers(con, "transfers WHERE id >= ?", [next_id])
        for name, rows, last in (("bonds", s.bonds, "bond"), ("weights", s.weights, "weight")):
            insert_columns(con, name, {"epoch": (pa.int64(), [s.epoch] * len(rows)),
                                "validator": (pa.string(), [r[0] for r in rows]),
                                "miner": (pa.string(), [r[1] for r in rows]), last: (pa.float64(), [r[2] for r in rows])})
        insert_columns(con, "validator_reports", {
            "epoch": (pa.int64(), [s.epoch] * len(s.reports)),
            "validator": (pa.string(), [r[0] for r in s.reports]),
            "similarity_to_consensus": (pa.float64(), [r[1] for r in s.reports]),
            "similarity_to_own_history": (pa.float64(), [r[2] for r in s.reports]),
        })
        if s.contributions:
            updates = arrow_table({
                "submission_id": (pa.string(), [c.submission_id for c in s.contributions]),
                "status": (pa.string(), [c.status for c in s.contributions]),
                "duplicate_rows": (pa.int64(), [c.duplicate_rows for c in s.contributions]),
                "value": (pa.float64(), [c.value for c in s.contributions]),
                "duplicate_of": (pa.list_(pa.string()), [list(c.duplicate_of) or None for c in s.contributions]),
                **{name: (t, [getattr(c, name) for c in s.contributions]) for name, t in ORIGINALITY_COLUMNS},
            })
            assigned = ", ".join(f"{name} = u.{name}" for name in updates.column_names[1:])
            with registered(con, "_settle_updates", updates) as view:
                con.execute(f"UPDATE contributions SET {assigned} FROM {view} u "
                            "WHERE contributions.submission_id = u.submission_id")
        insert_columns(con, "epoch_values", {
            "epoch": (pa.int64(), [s.epoch] * len(s.epoch_values)),
            "task": (pa.string(), [v.task for v in s.epoch_values]),
            **{name: (pa.int64(), [getattr(v, name) for v in s.epoch_values])
               for name in ("lake_rows", "new_rows", "admitted_rows", "test_rows")},
            **{name: (pa.float64(), [getattr(v, name) for v in s.epoch_values]) for name in ("lake_utility", "gain")},
        })
        record_tallies(con, s.tallies)
        if s.inputs_document is not None:
            con.execute("INSERT INTO epoch_inputs VALUES (?, ?)", [s.epoch, s.inputs_document])
        insert_columns(con, "epoch_parameters", {
            "epoch": (pa.int64(), [s.epoch] * len(s.parameters)),
            "setting": (pa.string(), [p[0] for p in s.parameters]),
            "value": (pa.string(), [p[1] for p in s.parameters]),
            "proposal_id": (pa.int64(), [p[2] for p in s.parameters]),
        })
        prev = last_hash(con, s.epoch) or GENESIS_HASH
        results = _results_digest(con, s.epoch, line_table, order, payout_rows)
        link = chain_hash(prev, s.epoch, s.inputs_digest, results)
        con.execute(
            "UPDATE epochs SET ends_at = ?, settled_at = ?, inputs_digest = ?, results_digest = ?, prev_hash = ?, "
            "hash = ?, emission = ?, state = 'settled', inputs_version = ?, results_version = ?, "
            "operator_signature = ? WHERE epoch = ?",
            [now, now, s.inputs_digest, results, prev, link, s.emission,
             INPUTS_VERSION if s.inputs_document is not None else None, RESULTS_VERSION,
             sign(epoch_signing_message(s.epoch, link)) if sign is not None else None, s.epoch],
        )
        open_epoch(con, s.epoch + 1, now)
    return SettleOutcome(s.epoch, True, link, line_table.select(["account_id", "amount"]))


ORIGINALITY_COLUMNS = (("judged_rows", pa.int64()), ("unoriginal_rows", pa.int64()), ("gate_rows", pa.int64()),
                       ("originality_p", pa.float64()), ("median_p", pa.float64()),
                       ("value_without_originality", pa.float64()))
REWARD_COLUMNS = ("account_id", "role", "value", "weight", "consensus", "incentive", "dividends", "stake",
                  "validator_trust", "model_score")
LINE_SCHEMA = pa.schema([
    ("account_id", pa.string()), ("role", pa.string()), ("share", pa.float64()), ("kind", pa.string()),
    ("bucket", pa.string()), ("value", pa.float64()), ("weight", pa.float64()), ("consensus", pa.float64()),
    ("incentive", pa.float64()), ("dividends", pa.float64()), ("stake", pa.int64()),
    ("validator_trust", pa.float64()), ("model_score", pa.float64()),
])


def _account_order(epoch: int, lines: pa.Table) -> pa.Array | None:
    """The permutation that sorts the lines by account, as the results digest takes them (None: already sorted).
    An account has one reward row per epoch (the audit checks it too), so lines naming one twice are refused."""
    ids = lines.column("account_id")
    if len(ids) < 2 or pc.all(pc.less(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py():
        return None
    order = pc.sort_indices(ids)
    ordered = ids.take(order)
    same = pc.equal(ordered.slice(0, len(ids) - 1), ordered.slice(1))
    if pc.any(same).as_py():
        twice = pc.unique(ordered.slice(0, len(ids) - 1).filter(same)).to_pylist()
        raise DuplicateRewardLine(f"epoch {epoch}: the reward lines name account {', '.join(twice[:5])} more than "
                                  "once; an account's part of an epoch is one line (sum its shares)")
    return order


def _payout_transfers(epoch: int, payouts: pa.Table, first_id: int) -> pa.Table:
    """The payout transfer rows of `payouts` (lines with an amount), as the transfers table holds them (its columns
    in its order), ids from first_id on."""
    n = payouts.num_rows
    kind = payouts.column("kind")
    return pa.table({
        "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "epoch": pa.repeat(pa.scalar(epoch, pa.int64()), n),
        "debit_account": pa.repeat(pa.scalar(EMISSION_ACCOUNT, pa.string()), n),
        "debit_bucket": pa.repeat(pa.scalar("liquid", pa.string()), n),
        "credit_account": payouts.column("account_id"),
        "credit_bucket": payouts.column("bucket"),
        "amount": payouts.column("amount"),
        "kind": kind,
        "memo": pc.binary_join_element_wise(pa.scalar(f"epoch {epoch}"), kind, " "),
    })


def _results_digest(con: duckdb.DuckDBPyConnection, epoch: int, line_table: pa.Table, order: pa.Array | None,
                    payout_rows: pa.Table) -> str:
    """The epoch's results digest (RESULTS_VERSION), hashing the reward and payout rows from the tables just written
    rather than reading a million rows back; the rest (transfers made earlier in the epoch, releases, bonds…) is read
    from the ledger. The audit recomputes it from the ledger alone, so any difference would show there."""
    tables = result_tables(con, epoch, only=tuple(n for n in RESULT_TABLES if n not in ("rewards", "transfers")))
    rewards = line_table.select(list(RESULT_REWARD_COLUMNS))
    if order is not None:
        rewards = rewards.take(order)
    if payout_rows.num_rows:
        first, last = payout_rows.column("id")[0].as_py(), payout_rows.column("id")[-1].as_py()
    else:
        first = last = 0
    others = con.sql(f"SELECT {', '.join(RESULT_TRANSFER_COLUMNS)} FROM transfers "
                     "WHERE epoch = ? AND id NOT BETWEEN ? AND ? ORDER BY id", params=[epoch, first, last]).to_arrow_table()
    mine = payout_rows.select(others.column_names).cast(others.schema)
    before = others.filter(pc.less(others.column("id"), first))
    after = others.filter(pc.greater(others.column("id"), last))
    ordered = {"rewards": rewards, "transfers": pa.concat_tables([before, mine, after])}
    return columns_digest({name: ordered.get(name, tables.get(name)) for name in RESULT_TABLES}, RESULTS_VERSION)


def reward_lines(lines: Sequence[RewardLine]) -> pa.Table:
    """Reward lines as the Arrow table a settlement writes from (LINE_SCHEMA): a column per RewardLine field."""
    # A comprehension per field is ~2.5x faster than transposing tuples at a million lines.
    return pa.table({f.name: pa.array([getattr(ln, f.name) for ln in lines], type=f.type) for f in LINE_SCHEMA},
                    schema=LINE_SCHEMA)
