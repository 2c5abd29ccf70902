"""Stage 1: the Beam ingest of drop/ into the open epoch, recorded in the ledger; the lake as landed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ledger import accounts, contributions
from ledger.contributions import AcceptedSubmission, ContributionRecord
from ledger.db import open_ledger, transaction
from ledger.epochs import current_epoch
from quality.task import Task, load_tasks
from tributary.home import Home


@dataclass(frozen=True)
class IngestSummary:
    epoch: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    rows: int


def ingest(home: Home) -> IngestSummary:
    """Run the Beam ingest over the drop folder into the open epoch and record what it decided."""
    from pipelines.ingest import Registry, run_ingest  # Beam is imported only when ingest runs
    from quality.schema import cast_predictions, cast_to_task
    from quality.suite import validate

    paths = home.paths
    tasks = load_tasks(paths.tasks)
    with open_ledger(paths.ledger) as con:
        epoch = current_epoch(con)
        registry = Registry(
            accounts={a.public_key: (a.account_id, a.role) for a in accounts.all_accounts(con) if a.public_key},
            last_nonce=contributions.last_nonces(con),
            tasks=tasks,
            commit_reveal=home.settings.commit_reveal,
            reveal_epochs=home.settings.reveal_epochs,
            commitments=contributions.open_commitments(con, epoch, home.settings.reveal_epochs),
        )
    result = run_ingest(
        drop=paths.drop, lake=paths.lake, archive=paths.archive, quarantine=paths.quarantine, epoch=epoch,
        registry=registry, cast=cast_to_task, gate=validate, max_payload_bytes=home.settings.max_payload_bytes,
        pipeline_args=list(home.settings.beam_pipeline_args), cast_predictions=cast_predictions,
        gate_predictions=PredictionsGate({
            name: tuple(_challenge(home, t).column("row_id").to_pylist()) for name, t in tasks.items() if t.challenge
        }),
    )
    records = [
        ContributionRecord(
            submission_id=a.submission_id, epoch=epoch, account_id=a.account_id, public_key=a.public_key, task=a.task,
            kind=a.kind, rows=a.rows, status="accepted", reason=None, digest=a.digest, nonce=a.nonce, file=a.file,
            received_at=a.received_at, lake_path=_relative(a.lake_path, paths.root),
        )
        for a in result.accepted
    ] + [
        ContributionRecord(
            submission_id=r.submission_id, epoch=epoch, account_id=r.account_id, public_key=r.public_key, task=r.task,
            kind=r.kind, rows=None, status="quarantined", reason=r.reason, digest=None, nonce=r.nonce, file=r.file,
            received_at=r.received_at, detail=r.detail,
        )
        for r in result.rejected
    ]
    commits = [(epoch, a.account_id, _commitment_of(paths.root / a.lake_path), a.submission_id)
               for a in result.accepted if a.kind == "weights"]
    with open_ledger(paths.ledger) as con, transaction(con):
        contributions.record(con, records)
        contributions.record_commitments(con, [c for c in commits if c[2] is not None])
    reasons: dict[str, int] = {}
    for r in result.rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    return IngestSummary(epoch, len(result.accepted), len(result.rejected), reasons, sum(a.rows for a in result.accepted))


def _commitment_of(lake_file: Path) -> str | None:
    """The hash in a landed weight file if it is a commitment, else None."""
    table = pq.read_table(lake_file, columns=["mode", "commitment"])
    return table.column("commitment")[0].as_py() if table.column("mode")[0].as_py() == "commit" else None


@dataclass(frozen=True)
class PredictionsGate:
    """The quality gate for predictions: the task's GX predictions suite over its challenge row ids (picklable)."""

    challenge_ids: dict[str, tuple[int, ...]]

    def __call__(self, table: pa.Table, task: Task):
        from quality.suite import validate_predictions

        return validate_predictions(table, task, self.challenge_ids[task.name])


def _challenge(home: Home, task: Task) -> pa.Table:
    return pq.read_table(home.path_of(task.challenge))


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else str(p)


@dataclass(frozen=True)
class LakeSnapshot:
    """The epoch's accepted dataset submissions as they sit in the lake."""

    epoch: int
    submissions: tuple[AcceptedSubmission, ...]


def lake_snapshot(home: Home, epoch: int) -> LakeSnapshot:
    """List the epoch's landed dataset submissions, in arrival order."""
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return LakeSnapshot(epoch, tuple(contributions.accepted(con, epoch, "dataset")))


def revalidate(home: Home, snapshot: LakeSnapshot) -> list[tuple[str, object]]:
    """Run each landed submission's task suite again on its lake file: (submission_id, quality Report)."""
    from quality.suite import validate

    tasks = load_tasks(home.paths.tasks)
    reports = []
    for sub in snapshot.submissions:
        task = tasks[sub.task]
        table = pq.read_table(home.root / sub.lake_path, columns=task.columns())
        reports.append((sub.submission_id, validate(table, task)))
    return reports
