"""`tributary audit`: recompute the hash chain and check the money invariants of DESIGN 4.6."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb

from ledger import balances
from ledger.digest import GENESIS_HASH, chain_hash, digest_text
from ledger.epochs import settled_epochs
from ledger.results import results_digest
from ledger.schema import EMISSION_ACCOUNT
from ledger.settlement import PAYOUT_KINDS


VALUE_TOLERANCE = 0.0  # values are stored as the same float64 the document holds: exact
# A task's gain is the fsum of its rows' values, each submission's value the fsum of its own: equal up to rounding.
GAIN_TOLERANCE = 1e-9


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
    _check_one_reward_row(con, report)
    _check_balances(con, report)
    _check_epochs(con, report)
    _check_values(con, report)
    _check_epoch_values(con, report)
    _check_stakes(con, report)
    _check_inputs(con, report)
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


def _check_epoch_values(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """An epoch pays for what it added: per task, the values of its dataset contributions (accepted, duplicate or
    unoriginal) add up to epoch_values.gain; a submission zeroed as unoriginal earned nothing. Epochs settled before
    migration 10 have no epoch_values rows and are checked by the hash chain only."""
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'epoch_values'").fetchall():
        return  # a ledger read (read-only, never migrated) from before migration 10
    for epoch, task, gain, paid in con.execute(
            "SELECT v.epoch, v.task, v.gain, COALESCE(SUM(c.value), 0) FROM epoch_values v "
            "LEFT JOIN contributions c ON c.epoch = v.epoch AND c.task = v.task AND c.kind = 'dataset' "
            "AND c.status <> 'quarantined' GROUP BY v.epoch, v.task, v.gain "
            f"HAVING abs(v.gain - COALESCE(SUM(c.value), 0)) > {GAIN_TOLERANCE} * (1 + abs(v.gain)) "
            "ORDER BY v.epoch, v.task").fetchall():
        report.problems.append(f"epoch {epoch}, task {task}: its rows added {gain} to the lake (epoch_values.gain), "
                               f"but its contributions were valued at {paid} in all")
    for epoch, submission_id, value in con.execute(
            "SELECT epoch, submission_id, value FROM contributions WHERE status = 'unoriginal' AND value <> 0 "
            "ORDER BY epoch, submission_id").fetchall():
        report.problems.append(f"epoch {epoch}: contribution {submission_id} is unoriginal (zeroed by the "
                               f"originality gate) but was valued at {value}")


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
        try:
            recomputed = results_digest(con, row.epoch)
        except ValueError as e:  # a results_version this code does not know: say so, check the rest
            report.problems.append(str(e))
            recomputed = row.results_digest
        if recomputed != row.results_digest:
            report.problems.append(
                f"epoch {row.epoch}: its rows now digest to {recomputed}, but {row.results_digest} was settled "
                "(a reward, transfer, bond, weight, contribution or epoch_values row of this epoch was changed)"
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


@dataclass(frozen=True)
class EmissionPaid:
    """A settled epoch's emission beside what it paid out: the payout transfers minted from the emission account
    and the rewards rows. Paid exactly when all three are equal."""

    epoch: int
    emission: int | None
    minted: int  # units of the epoch's payout transfers (PAYOUT_KINDS) from the emission account
    rewarded: int  # units of its rewards rows

    @property
    def exact(self) -> bool:
        return self.emission is not None and self.minted == self.rewarded == self.emission

    def problems(self) -> list[str]:
        out = []
        if self.minted != self.emission:
            out.append(f"epoch {self.epoch}: payout transfers sum to {self.minted} units, but its emission is "
                       f"{self.emission}")
        if self.rewarded != self.emission:
            out.append(f"epoch {self.epoch}: rewards.amount sums to {self.rewarded} units, but its emission is "
                       f"{self.emission}")
        return out


def emission_paid(con: duckdb.DuckDBPyConnection, epoch: int | None = None) -> list[EmissionPaid]:
    """The emission check of every settled epoch (or of `epoch` alone: empty while it is not settled), in order."""
    kinds = ", ".join("?" * len(PAYOUT_KINDS))
    rows = con.execute(
        f"""
        SELECT e.epoch, e.emission,
               (SELECT COALESCE(SUM(amount), 0) FROM transfers t WHERE t.epoch = e.epoch AND t.debit_account = ?
                AND t.kind IN ({kinds})),
               (SELECT COALESCE(SUM(amount), 0) FROM rewards r WHERE r.epoch = e.epoch)
        FROM epochs e WHERE e.settled_at IS NOT NULL AND (? IS NULL OR e.epoch = ?) ORDER BY e.epoch
        """,
        [EMISSION_ACCOUNT, *PAYOUT_KINDS, epoch, epoch],
    ).fetchall()
    return [EmissionPaid(int(e), emission, int(minted), int(rewarded)) for e, emission, minted, rewarded in rows]


def _check_payouts(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Each settled epoch paid its emission exactly: its payout transfers and its rewards both sum to it."""
    for paid in emission_paid(con):
        report.problems.extend(paid.problems())


def _check_one_reward_row(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """An account has at most one rewards row per epoch (settlement refuses duplicate lines; no index enforces it)."""
    for epoch, account_id, rows in con.execute(
            "SELECT epoch, account_id, count(*) FROM rewards GROUP BY epoch, account_id HAVING count(*) > 1 "
            "ORDER BY epoch, account_id").fetchall():
        report.problems.append(f"epoch {epoch}: account {account_id} has {rows} rewards rows; an account has one "
                               "per epoch (a row was copied into the ledger)")


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



def _check_inputs(con: duckdb.DuckDBPyConnection, report: AuditReport) -> None:
    """Recompute each epoch's inputs digest from the inputs document the ledger keeps (epoch_inputs), then check the
    document against the tables: the emission, the stakes consensus weighed, the values paid for, the unbonding
    released, the proposals tallied and the parameters in force. Epochs settled before migration 7 kept no document
    (inputs_version NULL) and are checked by the hash chain only."""
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'epoch_inputs'").fetchall():
        return  # a ledger read (read-only, never migrated) from before migration 7: no documents to check
    rows = con.execute("SELECT e.epoch, e.inputs_digest, e.emission, e.inputs_version, i.document FROM epochs e "
                       "LEFT JOIN epoch_inputs i USING (epoch) WHERE e.settled_at IS NOT NULL ORDER BY e.epoch").fetchall()
    for epoch, inputs_digest, emission, version, document in rows:
        if version is None:
            continue
        if document is None:
            report.problems.append(f"epoch {epoch}: inputs_version {version}, but its inputs document is missing")
            continue
        if digest_text(document) != inputs_digest:
            report.problems.append(f"epoch {epoch}: its inputs document digests to {digest_text(document)}, but "
                                   f"{inputs_digest} was settled (epoch_inputs was changed)")
            continue
        for problem in _inputs_disagree(con, epoch, emission, json.loads(document)):
            report.problems.append(f"epoch {epoch}: the inputs document {problem}")


def _inputs_disagree(con: duckdb.DuckDBPyConnection, epoch: int, emission: int, doc: dict) -> list[str]:
    out = []
    if doc.get("epoch") != epoch or doc.get("emission") != emission:
        out.append(f"names epoch {doc.get('epoch')} and emission {doc.get('emission')}, the epochs table {epoch} "
                   f"and {emission}")
    stake_of = dict(zip(doc.get("validators", []), doc.get("stake", [])))
    for account_id, stake in con.execute("SELECT account_id, stake FROM rewards WHERE epoch = ? AND role = "
                                         "'validator'", [epoch]).fetchall():
        if stake is not None and stake_of.get(account_id) != stake:
            out.append(f"weighs validator {account_id} by {stake_of.get(account_id)} units, rewards.stake says {stake}")
    values = dict(doc.get("values", []))
    for account_id, value in con.execute("SELECT account_id, value FROM rewards WHERE epoch = ? AND role = "
                                         "'contributor'", [epoch]).fetchall():
        if value is not None and abs(values.get(account_id, 0.0) - value) > VALUE_TOLERANCE:
            out.append(f"values contributor {account_id} at {values.get(account_id, 0.0)}, rewards.value says {value}")
    released = sorted([a, int(u)] for a, u in con.execute(
        "SELECT credit_account, amount FROM transfers WHERE epoch = ? AND kind = 'release'", [epoch]).fetchall())
    if sorted(doc.get("releases", [])) != released:
        out.append(f"releases {doc.get('releases', [])} from unbonding, the transfers {released}")
    tallied = sorted([int(p), st, int(y), int(n), int(a)] for p, st, y, n, a in con.execute(
        "SELECT proposal_id, status, yes_stake, no_stake, active_stake FROM proposals WHERE epoch = ? "
        "AND status <> 'open'", [epoch]).fetchall())
    if sorted(doc.get("tallies", [])) != tallied:
        out.append(f"tallies {doc.get('tallies', [])}, the proposals table {tallied}")
    params = sorted([s, v, p] for s, v, p in con.execute(
        "SELECT setting, value, proposal_id FROM epoch_parameters WHERE epoch = ?", [epoch]).fetchall())
    if sorted(doc.get("parameters", []), key=str) != sorted(params, key=str):
        out.append(f"has parameters {doc.get('parameters', [])}, epoch_parameters {params}")
    return out
