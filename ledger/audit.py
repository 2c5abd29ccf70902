"""`tributary audit`: recompute the hash chain and check the money invariants of DESIGN 4.6."""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from ledger import balances
from ledger.market import HOUSE_ACCOUNT_KEY
from ledger.digest import GENESIS_HASH, chain_hash
from ledger.epochs import settled_epochs
from ledger.results import results_digest
from ledger.schema import EMISSION_ACCOUNT, EPOCH_STATES
from ledger.settlement import PAYOUT_KINDS
from ledger.transfers import stakes_at_epoch_start

GENESIS_EPOCH = 0  # a market home settles epoch 0 at genesis (tributary/home.py)


@dataclass
class AuditReport:
    epochs_checked: int = 0
    transfers_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(con: duckdb.DuckDBPyConnection) -> AuditReport:
    """Check every settled epoch's link and every invariant; each problem names the epoch, account or transfer."""
    report = AuditReport()
    _check_chain(con, report)
    _check_transfers(con, report)
    _check_payouts(con, report)
    _check_balances(con, report)
    _check_epochs(con, report)
    _check_values(con, report)
    _check_stakes(con, report)
    return report


def _check_epochs(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Epochs run from genesis with no gap; every one but the last is settled; each state agrees with settled_at."""
    rows = con.execute("SELECT epoch, settled_at IS NOT NULL, state FROM epochs ORDER BY epoch").fetchall()
    for expected, (epoch, settled, state) in enumerate(rows, start=rows[0][0] if rows else 0):
        if epoch != expected:
            report.problems.append(f"epochs jump from {expected - 1} to {epoch}: epochs must be contiguous")
            break
        if not settled and epoch != rows[-1][0]:
            report.problems.append(f"epoch {epoch} is not settled, but a later epoch exists")
        if state is not None and (state == "settled") != settled:
            report.problems.append(f"epoch {epoch}: state {state!r} disagrees with its settled_at")


def _check_values(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Every accepted (or duplicate) contribution of a settled epoch was valued by its settlement."""
    rows = con.execute(
        "SELECT c.epoch, c.submission_id FROM contributions c JOIN epochs e USING (epoch) "
        "WHERE e.settled_at IS NOT NULL AND c.status <> 'quarantined' AND c.kind IN ('dataset', 'predictions') "
        "AND c.value IS NULL ORDER BY c.epoch, c.submission_id").fetchall()
    for epoch, submission_id in rows:
        report.problems.append(f"epoch {epoch}: contribution {submission_id} was accepted but has no value")


def _check_stakes(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """rewards.stake of each validator equals its staked balance at the epoch's start, in exact integers."""
    rows = con.execute(
        """
        WITH starts AS (
            SELECT r.epoch, r.account_id, r.stake,
                   (SELECT COALESCE(SUM(CASE WHEN t.credit_account = r.account_id AND t.credit_bucket = 'staked'
                                             THEN t.amount ELSE 0 END)
                                  - SUM(CASE WHEN t.debit_account = r.account_id AND t.debit_bucket = 'staked'
                                             THEN t.amount ELSE 0 END), 0)
                    FROM transfers t WHERE t.epoch < r.epoch
                      AND (t.credit_account = r.account_id OR t.debit_account = r.account_id)) AS staked
            FROM rewards r WHERE r.role = 'validator'
        )
        SELECT epoch, account_id, stake, CAST(staked AS BIGINT) FROM starts
        WHERE stake IS NOT NULL AND stake <> CAST(staked AS BIGINT) ORDER BY epoch, account_id
        """).fetchall()
    for epoch, account_id, stake, staked in rows:
        report.problems.append(f"epoch {epoch}: rewards.stake of validator {account_id} is {stake} units, but it "
                               f"had {staked} staked at the epoch's start")


def _check_chain(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    prev = GENESIS_HASH
    for row in settled_epochs(con):
        report.epochs_checked += 1
        if row.prev_hash != prev:
            report.problems.append(f"epoch {row.epoch}: prev_hash {row.prev_hash} does not match the previous epoch's hash {prev}")
        recomputed = results_digest(con, row.epoch)
        if recomputed != row.results_digest:
            report.problems.append(
                f"epoch {row.epoch}: its rows now digest to {recomputed}, but {row.results_digest} was settled "
                "(a reward, transfer, bond, weight or contribution row of this epoch was changed)"
            )
        expected = chain_hash(row.prev_hash or GENESIS_HASH, row.epoch, row.inputs_digest, row.results_digest)
        if row.hash != expected:
            report.problems.append(f"epoch {row.epoch}: hash {row.hash} should be {expected}")
        prev = row.hash


def _check_transfers(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    rows = con.execute(
        "SELECT t.id, t.amount, t.debit_account, t.debit_bucket, t.credit_account, t.credit_bucket, "
        "d.account_id IS NULL, c.account_id IS NULL FROM transfers t "
        "LEFT JOIN accounts d ON d.account_id = t.debit_account LEFT JOIN accounts c ON c.account_id = t.credit_account "
        "ORDER BY t.id"
    ).fetchall()
    report.transfers_checked = len(rows)
    for expected_id, (tid, amount, da, db, ca, cb, d_missing, c_missing) in enumerate(rows, start=1):
        if tid != expected_id:
            report.problems.append(f"transfer ids jump from {expected_id - 1} to {tid}: transfers were deleted")
            break
        if amount is None or amount <= 0:
            report.problems.append(f"transfer {tid}: amount {amount} is not a positive number of units")
        if (da, db) == (ca, cb):
            report.problems.append(f"transfer {tid}: debits and credits the same account and bucket {da}/{db}")
        if d_missing or c_missing:
            report.problems.append(f"transfer {tid}: names an unknown account ({da if d_missing else ca})")
    (total,) = con.execute("SELECT COALESCE(SUM(liquid + staked + unbonding), 0) FROM balances").fetchone()
    if total != 0:
        report.problems.append(f"the balances of all accounts sum to {total} units, not 0: debits and credits do not balance")


def _check_payouts(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    kinds = ", ".join(f"'{k}'" for k in PAYOUT_KINDS)
    rows = con.execute(
        f"""
        SELECT e.epoch, e.emission,
               (SELECT COALESCE(SUM(amount), 0) FROM transfers t WHERE t.epoch = e.epoch AND t.kind IN ({kinds})),
               (SELECT COALESCE(SUM(amount), 0) FROM rewards r WHERE r.epoch = e.epoch)
        FROM epochs e WHERE e.settled_at IS NOT NULL ORDER BY e.epoch
        """
    ).fetchall()
    for epoch, emission, paid, rewarded in rows:
        if paid != emission:
            report.problems.append(f"epoch {epoch}: payout transfers sum to {paid} units, but its emission is {emission}")
        if rewarded != emission:
            report.problems.append(f"epoch {epoch}: rewards.amount sums to {rewarded} units, but its emission is {emission}")


def _check_balances(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Balances recomputed from the transfers: none negative, and each equal to the kept balance_totals row."""
    kept = {r[0]: tuple(r[1:]) for r in con.execute(
        "SELECT account_id, liquid, staked, unbonding FROM balance_totals").fetchall()}
    for account_id, liquid, staked, unbonding in balances.recomputed(con):
        if account_id != EMISSION_ACCOUNT and min(liquid, staked, unbonding) < 0:
            report.problems.append(f"account {account_id}: negative balance (liquid {liquid}, staked {staked}, "
                                   f"unbonding {unbonding})")
        if kept.pop(account_id, (0, 0, 0)) != (liquid, staked, unbonding):
            report.problems.append(f"account {account_id}: balance_totals does not equal the sum of its transfers "
                                   f"(liquid {liquid}, staked {staked}, unbonding {unbonding})")
    for account_id, row in sorted(kept.items()):
        if row != (0, 0, 0):
            report.problems.append(f"account {account_id}: balance_totals holds {row} but no transfer moves it")


def _check_epoch_sequence(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Epochs are numbered without gaps from genesis (0, on a ledger a market home set up), and only the last one,
    the open epoch, is unsettled: settling an epoch opens the next in the same transaction."""
    rows = con.execute("SELECT epoch, settled_at IS NOT NULL FROM epochs ORDER BY epoch").fetchall()
    if not rows:
        return
    has_genesis = con.execute("SELECT 1 FROM market WHERE key = ?", [HOUSE_ACCOUNT_KEY]).fetchone() is not None
    first = rows[0][0]
    if has_genesis and first != GENESIS_EPOCH:
        report.problems.append(f"epoch {first}: the first epoch is {first}, not genesis {GENESIS_EPOCH} "
                               f"(epochs {GENESIS_EPOCH}..{first - 1} are missing)")
    for (prev, _), (epoch, _) in zip(rows, rows[1:]):
        if epoch != prev + 1:
            report.problems.append(f"epoch {epoch}: follows epoch {prev} (epochs {prev + 1}..{epoch - 1} are missing)")
    for epoch, settled in rows[:-1]:
        if not settled:
            report.problems.append(f"epoch {epoch}: unsettled, but a later epoch exists (only the last may be open)")
    last, last_settled = rows[-1]
    if last_settled:
        report.problems.append(f"epoch {last}: settled, but no epoch {last + 1} was opened after it")


def _check_epoch_states(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """An epoch's state is 'settled' exactly when it has a settled_at."""
    rows = con.execute("SELECT epoch, state, settled_at FROM epochs ORDER BY epoch").fetchall()
    for epoch, state, settled_at in rows:
        if state not in EPOCH_STATES:
            report.problems.append(f"epoch {epoch}: state {state!r} is not one of {', '.join(EPOCH_STATES)}")
        elif settled_at is not None and state != "settled":
            report.problems.append(f"epoch {epoch}: settled at {settled_at}, but its state is {state!r}")
        elif settled_at is None and state == "settled":
            report.problems.append(f"epoch {epoch}: state is 'settled', but it has no settled_at")


def _check_contribution_values(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Settlement values every accepted or duplicate submission of the epoch; a NULL value was erased or skipped."""
    rows = con.execute(
        "SELECT c.epoch, c.submission_id, c.account_id, c.status FROM contributions c "
        "JOIN epochs e ON e.epoch = c.epoch WHERE e.settled_at IS NOT NULL "
        "AND c.status IN ('accepted', 'duplicate') AND c.value IS NULL ORDER BY c.epoch, c.submission_id"
    ).fetchall()
    for epoch, submission_id, account_id, status in rows:
        report.problems.append(f"epoch {epoch}: {status} contribution {submission_id} of account {account_id} "
                               "has no value, though its epoch is settled")


def _check_validator_stakes(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Each validator's rewards.stake is the units it had staked when the epoch started (transfers of earlier
    epochs): the stake consensus weighed it by."""
    rows = con.execute(
        "SELECT r.epoch, r.account_id, r.stake FROM rewards r JOIN epochs e ON e.epoch = r.epoch "
        "WHERE r.role = 'validator' AND e.settled_at IS NOT NULL ORDER BY r.epoch, r.account_id"
    ).fetchall()
    starts: dict[int, dict[str, int]] = {}
    for epoch, account_id, stake in rows:
        if epoch not in starts:
            starts[epoch] = stakes_at_epoch_start(con, epoch)
        expected = starts[epoch].get(account_id, 0)
        if int(stake or 0) != expected:  # NULL: recorded without a stake, i.e. none
            report.problems.append(f"epoch {epoch}: account {account_id} has rewards.stake {stake}, but it had "
                                   f"{expected} units staked at the epoch's start")
