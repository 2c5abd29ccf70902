"""Rich tables for people: an epoch run's outcome, the leaderboard, validators, quarantine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ledger.money import units_to_tokens
from ledger.queries import LEADERBOARD_SQL, QUARANTINE_SQL, VALIDATORS_SQL, run_sql
from engine.epoch import EpochRun
from engine.home import Home

if TYPE_CHECKING:
    from engine.stages.scoring import SubmissionScore

TOKEN_COLUMNS = ("earned_units", "stake_units")


def print_query(console: Console, home: Home, sql: str, title: str) -> None:
    """A ledger query as a table, with base-unit columns shown in tokens."""
    result = run_sql(home.paths.ledger, sql)
    grid = Table(title=title, title_justify="left")
    for col in result.columns:
        grid.add_column(col.replace("_units", " (tokens)"), justify="right" if col.endswith("units") else "left")
    for row in result.rows:
        grid.add_row(*(
            units_to_tokens(v) if c in TOKEN_COLUMNS and v is not None else ("" if v is None else str(v))
            for c, v in zip(result.columns, row)
        ))
    console.print(grid)


def _short_id(submission_id: str) -> str:
    """Digest and key prefixes and the nonce: enough to tell submissions apart on a screen."""
    parts = submission_id.split("-")
    if len(parts) == 3 and len(parts[0]) == 64 and len(parts[1]) == 64:
        return f"{parts[0][:12]}…-{parts[1][:8]}…-{parts[2]}"
    return submission_id


SUBMISSION_COLUMNS = ("submission", "account", "task", "status", "rows", "duplicates", "judged", "unoriginal",
                      "gate p", "copies", "value")


def submission_row(sub: SubmissionScore, dataset: bool = True) -> list[str]:
    """One scored submission as `epoch run` shows it: status (accepted | duplicate | unoriginal: zeroed as a whole by
    the originality gate), rows, duplicate rows, rows judged (could earn) and unoriginal (earn 0), the gate's
    p-value, what its duplicates copy, its value. Predictions are scored, not judged: '-'."""
    judged, unoriginal, gate_p = ((str(sub.judged_rows), str(sub.unoriginal_rows), f"{sub.gate_p:.3g}") if dataset
                                  else ("-", "-", "-"))
    return [_short_id(sub.submission_id), sub.account_id, sub.task, sub.status,
            str(sub.rows), str(sub.duplicate_rows), judged, unoriginal, gate_p,
            ", ".join(_short_id(d) for d in sub.duplicate_of) or "-", f"{sub.value:.6f}"]


def print_epoch_run(console: Console, home: Home, run: EpochRun) -> None:
    """What one `epoch run` did: ingest counts, per-submission values, and the settlement if it closed."""
    s = run.ingest
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(s.reasons.items())) or "none"
    console.print(f"[bold]epoch {s.epoch}[/]: accepted {s.accepted} submissions ({s.rows} rows), "
                  f"quarantined {s.quarantined} ({reasons})")
    if s.waiting or s.suspicious:
        console.print(f"  {s.waiting} incomplete submission(s) left waiting in drop/; {s.suspicious} accepted but "
                      "flagged suspicious (values far outside the task's profile: see contributions.suspicious)")
    for docs in s.data_docs:
        console.print(f"  Great Expectations Data Docs: {docs}")
    if run.scores.submissions:
        from engine.stages.settle import dataset_submission_ids, epoch_values

        datasets = dataset_submission_ids(home, run.scores.epoch)
        grid = Table(title=f"epoch {s.epoch}: data value so far", title_justify="left")
        for col in SUBMISSION_COLUMNS:
            grid.add_column(col)
        for sub in run.scores.submissions:
            grid.add_row(*submission_row(sub, sub.submission_id in datasets))
        console.print(grid)
        values = run.settlement.epoch_values if run.settlement is not None else epoch_values(run.scores, datasets)
        for line in values:
            console.print(line.sentence)
    if run.outcome is not None:
        verb = "settled" if run.outcome.settled else "was already settled (same inputs: nothing written)"
        console.print(f"epoch {s.epoch} {verb}: chain hash {run.outcome.hash[:16]}…; epoch {s.epoch + 1} is open")
        print_query(console, home, VALIDATORS_SQL, "validators")


def print_market(console: Console, home: Home) -> None:
    """The whole market so far: leaderboard, validators' dividends, quarantine."""
    print_query(console, home, LEADERBOARD_SQL, "leaderboard: contributors by tokens earned")
    print_query(console, home, VALIDATORS_SQL, "validators: stake, trust and dividends per epoch")
    print_query(console, home, QUARANTINE_SQL, "quarantined submissions")
