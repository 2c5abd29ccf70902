"""Governance by stake: what may be voted on (each setting with its range), and the check a proposal must pass.

A proposal names a governed setting and a value; it is tallied when the epoch it landed in settles, with stakes
at that epoch's start, and a passed one is in force from the next epoch on (never the one being settled).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass

import duckdb

from ledger.errors import LedgerError
from ledger.transfers import stakes_at_epoch_start
from protocol.reasons import NOT_GOVERNED, NOT_STAKED, OUT_OF_RANGE, PROPOSAL_CLOSED, UNKNOWN_PROPOSAL
from protocol.settings_rules import GOVERNED_RULES, SettingRule, SettingRuleError, task_open_rule

TASK_OPEN = re.compile(r"task\.([A-Za-z0-9_.-]+)\.open")  # opening or closing a task: task.NAME.open = true|false


class GovernanceError(LedgerError):
    """A proposal or vote that breaks a rule; `reason` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# The governed settings and their ranges are rows of the one rule table (protocol/settings_rules.py), which
# settings.toml and scenario files are checked against too: no home can hold a value no vote could set.
GOVERNED: dict[str, SettingRule] = dict(GOVERNED_RULES)


def governed_names(tasks: Collection[str] = ()) -> list[str]:
    """Every setting a proposal may name: the GOVERNED list, then task.NAME.open for each task."""
    return [*GOVERNED, *(f"task.{t}.open" for t in sorted(tasks))]


def rule_for(setting: str, tasks: Collection[str]) -> SettingRule:
    """The rule of a governed setting; GovernanceError (reason not_governed) naming the list otherwise."""
    if setting in GOVERNED:
        return GOVERNED[setting]
    m = TASK_OPEN.fullmatch(setting)
    if m and m.group(1) in tasks:
        return task_open_rule(m.group(1))
    raise GovernanceError(NOT_GOVERNED, f"setting {setting!r} cannot be voted on; governed settings: "
                                          f"{', '.join(governed_names(tasks))}")


def check_proposal(setting: str, value: str, tasks: Collection[str] = ()) -> str:
    """The proposed value as canonical JSON text, or GovernanceError (reason out_of_range) naming the rule."""
    rule = rule_for(setting, tasks)
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        parsed = value
    if rule.type == "int" and isinstance(parsed, float) and parsed.is_integer():
        parsed = int(parsed)  # JSON's 5e11 is a whole number
    try:
        rule.check(parsed)
    except SettingRuleError:
        raise GovernanceError(OUT_OF_RANGE, f"setting {setting!r} must be {rule.describe()}, got {value!r}") from None
    if rule.type == "float":
        parsed = float(parsed)
    return json.dumps(parsed)


@dataclass(frozen=True)
class Tally:
    """A proposal's count when its epoch settles: stakes at that epoch's start, the latest vote of each key."""

    proposal_id: int
    setting: str
    value: str  # canonical JSON
    status: str  # passed | rejected
    yes_stake: int
    no_stake: int
    active_stake: int
    applies_from: int | None  # the epoch after the one tallied, when passed


def stakes_at_start(con: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, int]:
    """Every account's staked units at `epoch`'s start (transfers of earlier epochs): its say in that epoch."""
    return stakes_at_epoch_start(con, epoch, role=None)


def propose(con: duckdb.DuckDBPyConnection, *, epoch: int, submission_id: str, proposer: str, role: str,
            setting: str, value: str, arrival: int, tasks: Collection[str]) -> tuple[int, str]:
    """Record a proposal (and the proposer's own yes vote); returns its id and its value as canonical JSON.
    GovernanceError if it breaks a rule."""
    canonical = check_proposal(setting, value, tasks)
    if role != "validator" or stakes_at_start(con, epoch).get(proposer, 0) <= 0:
        raise GovernanceError(NOT_STAKED, f"only a validator with stake at epoch {epoch}'s start may propose; "
                                          f"{proposer} has none")
    ((proposal_id,),) = con.execute("SELECT COALESCE(max(proposal_id), 0) + 1 FROM proposals").fetchall()
    con.execute("INSERT INTO proposals (proposal_id, epoch, setting, value, proposer, submission_id, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'open')", [proposal_id, epoch, setting, canonical, proposer, submission_id])
    con.execute("INSERT INTO votes VALUES (?, ?, ?, ?, 'yes', ?)", [submission_id, proposal_id, epoch, proposer, arrival])
    return proposal_id, canonical


def vote(con: duckdb.DuckDBPyConnection, *, epoch: int, submission_id: str, voter: str, proposal_id: int,
         choice: str, arrival: int) -> None:
    """Record a vote on a proposal of this epoch; GovernanceError for an unknown or tallied one, or no stake."""
    row = con.execute("SELECT epoch, status FROM proposals WHERE proposal_id = ?", [proposal_id]).fetchone()
    if row is None:
        raise GovernanceError(UNKNOWN_PROPOSAL, f"field 'proposal_id': there is no proposal {proposal_id}")
    if row[1] != "open" or row[0] != epoch:
        raise GovernanceError(PROPOSAL_CLOSED, f"field 'proposal_id': proposal {proposal_id} was made in epoch "
                                               f"{row[0]} and tallied when it settled; votes count only in that epoch")
    if stakes_at_start(con, epoch).get(voter, 0) <= 0:
        raise GovernanceError(NOT_STAKED, f"{voter} had no stake at epoch {epoch}'s start: a vote weighs by stake")
    con.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?)", [submission_id, proposal_id, epoch, voter, choice, arrival])


def tally(con: duckdb.DuckDBPyConnection, epoch: int, pass_share: float) -> tuple[Tally, ...]:
    """Count the proposals made in `epoch` (read only; settlement writes the result). A proposal passes when the
    yes stake exceeds pass_share of the active stake: all units staked at the epoch's start."""
    stakes = stakes_at_start(con, epoch)
    active = sum(stakes.values())
    proposals = con.execute("SELECT proposal_id, setting, value FROM proposals WHERE epoch = ? AND status = 'open' "
                            "ORDER BY proposal_id", [epoch]).fetchall()
    latest = con.execute(
        "SELECT proposal_id, voter, vote FROM votes WHERE epoch = ? "
        "QUALIFY row_number() OVER (PARTITION BY proposal_id, voter ORDER BY arrival DESC, submission_id DESC) = 1",
        [epoch]).fetchall()
    out = []
    for proposal_id, setting, value in proposals:
        yes = sum(stakes.get(v, 0) for p, v, c in latest if p == proposal_id and c == "yes")
        no = sum(stakes.get(v, 0) for p, v, c in latest if p == proposal_id and c == "no")
        passed = active > 0 and yes > pass_share * active
        out.append(Tally(proposal_id, setting, value, "passed" if passed else "rejected", yes, no, active,
                         epoch + 1 if passed else None))
    return tuple(out)


def record_tallies(con: duckdb.DuckDBPyConnection, tallies: tuple[Tally, ...]) -> None:
    """Write each tally's result into `proposals` (inside the settlement's transaction)."""
    for t in tallies:
        con.execute("UPDATE proposals SET status = ?, yes_stake = ?, no_stake = ?, active_stake = ?, applies_from = ? "
                    "WHERE proposal_id = ?", [t.status, t.yes_stake, t.no_stake, t.active_stake, t.applies_from,
                                              t.proposal_id])


def in_force(con: duckdb.DuckDBPyConnection, epoch: int) -> dict[str, tuple[str, int]]:
    """setting -> (JSON value, proposal_id) of the latest passed proposal in force at `epoch`."""
    rows = con.execute(
        "SELECT setting, value, proposal_id FROM proposals WHERE status = 'passed' AND applies_from <= ? "
        "QUALIFY row_number() OVER (PARTITION BY setting ORDER BY applies_from DESC, proposal_id DESC) = 1",
        [epoch]).fetchall()
    return {setting: (value, int(pid)) for setting, value, pid in rows}
