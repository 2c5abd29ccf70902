"""Stage 2: what each contribution is worth: exact KNN-Shapley of new rows, model scores of predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lake import read_lake_file
from ledger import contributions, transfers
from ledger.db import open_ledger
from ledger.epochs import current_epoch
from quality.task import Task, load_tasks
from tributary.home import Home


@dataclass(frozen=True)
class SubmissionScore:
    submission_id: str
    account_id: str
    task: str
    rows: int
    duplicate_rows: int
    value: float

    @property
    def status(self) -> str:
        return "duplicate" if self.rows and self.duplicate_rows == self.rows else "accepted"


@dataclass(frozen=True)
class EpochScores:
    epoch: int
    submissions: tuple[SubmissionScore, ...]
    values: dict[str, float]  # account_id -> summed data value over its rows and tasks
    inputs: dict = field(default_factory=dict)  # what the scores were computed from, for the inputs digest
    model_scores: dict[str, float] = field(default_factory=dict)  # account_id -> summed prediction score


def score(home: Home, epoch: int | None = None) -> EpochScores:
    """Value every accepted dataset row of the epoch with exact KNN-Shapley against each task's holdout.

    A row already in the lake (an earlier epoch, or an earlier submission this epoch) is a duplicate and earns
    nothing: only its first submitter is paid for it.
    """
    from rewards.duplicates import first_seen_mask, near_duplicate_mask
    from rewards.valuation import knn_shapley

    paths = home.paths
    with open_ledger(paths.ledger, read_only=True) as con:
        epoch = current_epoch(con) if epoch is None else epoch
        subs = contributions.accepted(con, epoch, "dataset")
    tasks = load_tasks(paths.tasks)
    scores: list[SubmissionScore] = []
    values: dict[str, float] = {}
    inputs: list = []
    for task_name in sorted({s.task for s in subs}):
        task = tasks[task_name]
        task_subs = [s for s in subs if s.task == task_name]
        tables = [read_lake_file(home.path_of(s.lake_path)) for s in task_subs]
        pool = pa.concat_tables(tables) if tables else None
        prior = prior_rows(home, epoch, task)
        holdout = pq.read_table(home.path_of(task.holdout))
        x = _features(pool, task)
        fresh = first_seen_mask(pool.column("_row_hash").to_numpy(), prior.column("_row_hash").to_numpy())
        fresh &= ~near_duplicate_mask(
            x, pool.column("_contributor").to_numpy(zero_copy_only=False), _features(prior, task),
            prior.column("_contributor").to_numpy(zero_copy_only=False),
            scale=feature_scale(holdout, task), tol=task.near_duplicate_tol,
        )
        y = pool.column(task.label).to_numpy(zero_copy_only=False)
        row_values = np.zeros(pool.num_rows)
        if fresh.any():
            row_values[fresh] = knn_shapley(
                x[fresh], y[fresh], _features(holdout, task), holdout.column(task.label).to_numpy(zero_copy_only=False),
                k=task.k,
            )
        start = 0
        for sub, table in zip(task_subs, tables):
            submission_id, account_id, lake_path = sub.submission_id, sub.account_id, sub.lake_path
            stop = start + table.num_rows
            value = float(np.sum(row_values[start:stop]))
            dup = int(np.count_nonzero(~fresh[start:stop]))
            scores.append(SubmissionScore(submission_id, account_id, task_name, table.num_rows, dup, value))
            values[account_id] = values.get(account_id, 0.0) + value
            inputs.append([submission_id, account_id, task_name, lake_path])
            start = stop
    model_scores, prediction_scores = score_predictions(home, epoch, tasks)
    scores.extend(prediction_scores)
    inputs.extend([s.submission_id, s.account_id, s.task, "predictions"] for s in prediction_scores)
    return EpochScores(epoch, tuple(scores), values, {"submissions": inputs}, model_scores)


def score_predictions(home: Home, epoch: int, tasks: dict[str, Task]) -> tuple[dict[str, float], list[SubmissionScore]]:
    """Score the epoch's predictions on each task's challenge against the hidden labels (rewards.model_scores).

    A contributor's latest predictions for a task in the epoch count; earlier ones score 0. The meta-model weighs
    each contributor by its stake at the epoch's start (equal weights when nobody has stake).
    """
    from rewards.model_scores import score_models

    with open_ledger(home.paths.ledger, read_only=True) as con:
        subs = contributions.accepted(con, epoch, "predictions")
        stakes = transfers.stakes_at_epoch_start(con, epoch, role="contributor")
    totals: dict[str, float] = {}
    out: list[SubmissionScore] = []
    for task_name in sorted({s.task for s in subs}):
        task = tasks[task_name]
        labels = pq.read_table(home.path_of(task.challenge_labels)).sort_by("row_id")
        index = {v: i for i, v in enumerate(task.label_domain)}
        y = np.array([index[v] for v in labels.column(task.label).to_pylist()], dtype=np.int64)
        latest: dict[str, tuple] = {}
        task_subs = [s for s in subs if s.task == task_name]
        for sub in task_subs:  # arrival order: a later file replaces an earlier one
            latest[sub.account_id] = sub
        chosen = sorted(latest.values(), key=lambda s: s.account_id)
        probs = []
        for sub in chosen:
            table = read_lake_file(home.path_of(sub.lake_path)).sort_by("row_id")
            probs.append(np.column_stack([table.column(c).to_numpy() for c in task.prediction_columns()[1:]]))
        model = score_models(probs, [float(stakes.get(s.account_id, 0)) for s in chosen], y, len(task.label_domain))
        scored = {s.submission_id: m.score for s, m in zip(chosen, model)}
        for sub in task_subs:
            value = scored.get(sub.submission_id, 0.0)
            out.append(SubmissionScore(sub.submission_id, sub.account_id, task_name, len(y), 0, value))
            totals[sub.account_id] = totals.get(sub.account_id, 0.0) + value
    return totals, out


def _features(table: pa.Table, task: Task) -> np.ndarray:
    return np.column_stack([table.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in task.feature_names()])


def prior_rows(home: Home, epoch: int, task: Task) -> pa.Table:
    """This task's rows accepted in earlier epochs: features, row hash and contributor (first submitters first).

    The ledger says which lake files count; a lake file that an interrupted ingest wrote but never recorded does not.
    """
    columns = [*task.feature_names(), "_row_hash", "_contributor"]
    with open_ledger(home.paths.ledger, read_only=True) as con:
        subs = contributions.accepted_before(con, epoch, "dataset", task.name)
    if not subs:
        return task.arrow_schema().empty_table().select(task.feature_names()).append_column(
            "_row_hash", pa.array([], pa.uint64())).append_column("_contributor", pa.array([], pa.string()))
    return pa.concat_tables([read_lake_file(home.path_of(s.lake_path), columns) for s in subs])


def feature_scale(holdout: pa.Table, task: Task) -> np.ndarray:
    """Per-feature width used to compare rows for near duplicates: the holdout's range (1 where it is flat)."""
    x = _features(holdout, task)
    width = np.nanmax(x, axis=0) - np.nanmin(x, axis=0) if len(x) else np.ones(len(task.features))
    return np.where(np.isfinite(width) & (width > 0), width, 1.0)
