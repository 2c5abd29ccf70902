"""What an operator wants to see about one epoch, read from the ledger alone.

The Dagster assets attach it as metadata after a run, and the ledger sync attaches the same figures to epochs that
were settled from the CLI, so an epoch looks the same in the UI whichever driver settled it.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ledger.epoch_values import EpochValue, read_epoch_values
from ledger.epochs import epoch_state, get_epoch

COPY_SIGNAL_FLAG = 0.1  # similarity to consensus above similarity to own history by this much: flagged as a copier


@dataclass(frozen=True)
class ContributorLine:
    account_id: str
    name: str
    submissions: int
    rows: int
    duplicate_rows: int
    value: float


@dataclass(frozen=True)
class SubmissionLine:
    """A dataset submission's value and originality figures (None: not measured, e.g. settled before the rules)."""

    submission_id: str
    name: str
    task: str
    status: str  # accepted | duplicate | unoriginal
    rows: int
    duplicate_rows: int
    judged_rows: int | None
    unoriginal_rows: int | None
    gate_p: float | None  # the originality gate's p-value (below GATE_P: zeroed as a whole, 'unoriginal')
    median_p: float | None
    value: float
    value_without_originality: float | None

    @property
    def originality_cost(self) -> float | None:
        """What the originality rules took from it: its value without them less its value."""
        return None if self.value_without_originality is None else self.value_without_originality - self.value


@dataclass(frozen=True)
class ValidatorLine:
    account_id: str
    name: str
    stake_units: int
    trust: float | None
    dividends: float | None
    amount_units: int
    similarity_to_consensus: float | None
    similarity_to_own_history: float | None

    @property
    def copy_flag(self) -> bool:
        c, h = self.similarity_to_consensus, self.similarity_to_own_history
        return c is not None and h is not None and c - h > COPY_SIGNAL_FLAG


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    state: str  # open | ingesting | scored | settled
    accepted: int  # submissions accepted (duplicates included)
    duplicates: int  # submissions whose every row copies an earlier row
    quarantined: dict[str, int]  # reason -> submissions
    rows: int  # dataset rows landed
    contributors: tuple[ContributorLine, ...]
    rewards: tuple[tuple[str, str, str, int], ...]  # (account_id, name, role, amount_units), largest first
    validators: tuple[ValidatorLine, ...]
    emission_units: int | None
    paid_units: int
    hash: str | None
    inputs_digest: str | None
    results_digest: str | None
    submissions: tuple[SubmissionLine, ...] = ()  # dataset submissions, most valuable first
    epoch_values: tuple[EpochValue, ...] = ()  # per task: what the epoch's rows added to the lake

    @property
    def unoriginal(self) -> int:
        """Submissions zeroed as a whole by the originality gate."""
        return sum(1 for s in self.submissions if s.status == "unoriginal")

    @property
    def settled(self) -> bool:
        return self.state == "settled"


def epoch_report(con: duckdb.DuckDBPyConnection, epoch: int) -> EpochReport:
    """Read one epoch's figures: submissions by outcome, value per contributor, payouts, validators, chain link."""
    state = epoch_state(con, epoch)
    row = get_epoch(con, epoch)
    ((accepted, duplicates, rows),) = con.execute(
        "SELECT count(*) FILTER (WHERE status <> 'quarantined'), count(*) FILTER (WHERE status = 'duplicate'), "
        "COALESCE(sum(rows) FILTER (WHERE status <> 'quarantined' AND kind = 'dataset'), 0) "
        "FROM contributions WHERE epoch = ?", [epoch]).fetchall()
    quarantined = dict(con.execute(
        "SELECT reason, count(*) FROM quarantine WHERE epoch = ? GROUP BY reason ORDER BY reason", [epoch]).fetchall())
    contributors = tuple(ContributorLine(*r) for r in con.execute(
        "SELECT c.account_id, COALESCE(a.name, c.account_id), count(*), COALESCE(sum(c.rows), 0), "
        "COALESCE(sum(c.duplicate_rows), 0), COALESCE(sum(c.value), 0.0) "
        "FROM contributions c LEFT JOIN accounts a USING (account_id) "
        "WHERE c.epoch = ? AND c.status <> 'quarantined' AND c.kind IN ('dataset', 'predictions') "
        "GROUP BY ALL ORDER BY 6 DESC, 1", [epoch]).fetchall())
    rewards = tuple(con.execute(
        "SELECT r.account_id, COALESCE(a.name, r.account_id), r.role, r.amount FROM rewards r "
        "LEFT JOIN accounts a USING (account_id) WHERE r.epoch = ? ORDER BY r.amount DESC, r.account_id",
        [epoch]).fetchall())
    validators = tuple(ValidatorLine(*r) for r in con.execute(
        "SELECT r.account_id, COALESCE(a.name, r.account_id), COALESCE(r.stake, 0), r.validator_trust, r.dividends, "
        "r.amount, v.similarity_to_consensus, v.similarity_to_own_history "
        "FROM rewards r LEFT JOIN accounts a USING (account_id) "
        "LEFT JOIN validator_reports v ON v.epoch = r.epoch AND v.validator = r.account_id "
        "WHERE r.epoch = ? AND r.role = 'validator' ORDER BY r.stake DESC NULLS LAST, r.account_id",
        [epoch]).fetchall())
    paid = sum(r[3] for r in rewards)
    return EpochReport(epoch, state, int(accepted), int(duplicates), quarantined, int(rows), contributors, rewards,
                       validators, row.emission if row else None, int(paid), row.hash if row else None,
                       row.inputs_digest if row else None, row.results_digest if row else None,
                       submission_lines(con, epoch), read_epoch_values(con, epoch))


def submission_lines(con: duckdb.DuckDBPyConnection, epoch: int) -> tuple[SubmissionLine, ...]:
    """An epoch's dataset submissions with their originality figures (none before migration 10, read-only)."""
    try:
        rows = con.execute(
            "SELECT c.submission_id, COALESCE(a.name, c.account_id), c.task, c.status, c.rows, "
            "COALESCE(c.duplicate_rows, 0), c.judged_rows, c.unoriginal_rows, c.originality_p, c.median_p, "
            "COALESCE(c.value, 0.0), c.value_without_originality "
            "FROM contributions c LEFT JOIN accounts a USING (account_id) "
            "WHERE c.epoch = ? AND c.kind = 'dataset' AND c.status <> 'quarantined' "
            "ORDER BY c.value DESC NULLS LAST, c.submission_id", [epoch]).fetchall()
    except duckdb.BinderException:  # a ledger read before its migration: no originality columns
        return ()
    return tuple(SubmissionLine(*r) for r in rows)


def value_history(con: duckdb.DuckDBPyConnection, upto_epoch: int, top: int = 8) -> dict[str, list[tuple[int, float]]]:
    """Value per contributor over the settled epochs up to `upto_epoch`: the `top` contributors by total value."""
    rows = con.execute(
        "WITH v AS (SELECT r.epoch, COALESCE(a.name, r.account_id) AS name, r.value FROM rewards r "
        "  LEFT JOIN accounts a USING (account_id) WHERE r.role = 'contributor' AND r.epoch <= ?), "
        "best AS (SELECT name FROM v GROUP BY name ORDER BY sum(COALESCE(value, 0)) DESC, name LIMIT ?) "
        "SELECT v.epoch, v.name, COALESCE(v.value, 0) FROM v JOIN best USING (name) ORDER BY v.name, v.epoch",
        [upto_epoch, top]).fetchall()
    out: dict[str, list[tuple[int, float]]] = {}
    for epoch, name, value in rows:
        out.setdefault(name, []).append((int(epoch), float(value)))
    return out


def epoch_numbers(con: duckdb.DuckDBPyConnection) -> tuple[list[int], list[int]]:
    """(every epoch after genesis that has begun, those of them settled), in order."""
    rows = con.execute("SELECT epoch, settled_at IS NOT NULL FROM epochs WHERE epoch >= 1 ORDER BY epoch").fetchall()
    return [int(e) for e, _ in rows], [int(e) for e, s in rows if s]


def paid_contributors(con: duckdb.DuckDBPyConnection, epoch: int) -> list[tuple[str, int]]:
    """(name, units) of the contributors `epoch` paid, largest first (then by name)."""
    return con.execute(
        "SELECT a.name, r.amount FROM rewards r JOIN accounts a USING (account_id) "
        "WHERE r.epoch = ? AND r.role = 'contributor' AND r.amount > 0 ORDER BY r.amount DESC, a.name",
        [epoch]).fetchall()


REWARD_FIGURES = ("epoch", "account_id", "role", "value", "consensus", "incentive", "dividends", "amount", "stake",
                  "validator_trust", "weight")


def reward_figures(con: duckdb.DuckDBPyConnection, first_epoch: int = 1) -> list[tuple]:
    """Every rewards row from `first_epoch` on, as REWARD_FIGURES, by epoch and account."""
    return con.execute(f"SELECT {', '.join(REWARD_FIGURES)} FROM rewards WHERE epoch >= ? ORDER BY epoch, account_id",
                       [first_epoch]).fetchall()
