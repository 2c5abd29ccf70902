"""Stage 2: what each contribution is worth: exact KNN-Shapley of new rows, model scores of predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.lake import ROW_HASH_COLUMN, read_lake_file
from ledger import accounts, contributions
from ledger.contributions import AcceptedSubmission
from ledger.db import open_ledger
from ledger.epochs import current_epoch
from quality.task import Task
from quality.task_toml import load_tasks
from rewards.originality import GATE_ALPHA, GATE_P
from engine.home import Home
from engine.stages.ingest import LakeSnapshot, lake_snapshot

if TYPE_CHECKING:  # the valuation (rewards.marginal, the kept lake views) is imported only when rows are valued
    from rewards.marginal import RowValues


@dataclass(frozen=True)
class SubmissionScore:
    submission_id: str
    account_id: str
    task: str
    rows: int
    duplicate_rows: int
    value: float
    duplicate_of: tuple[str, ...] = ()  # the earlier submissions its duplicate rows copy, first source first
    # Originality (rewards.originality): rows tested (those that could earn), rows below the per-row level (earn 0),
    # rows below the gate's level, the gate's p-value (below GATE_P: unoriginal as a whole, earns 0), the median
    # p-value of its tested rows, and its value in the same game without the originality rules.
    judged_rows: int = 0
    unoriginal_rows: int = 0
    gate_rows: int = 0
    gate_p: float = 1.0
    median_p: float | None = None
    value_without_originality: float = 0.0

    @property
    def gated(self) -> bool:
        return self.gate_p < GATE_P

    @property
    def originality_cost(self) -> float:
        """What the originality rules took from it: its value without them less its value with them."""
        return self.value_without_originality - self.value

    @property
    def status(self) -> str:
        if self.rows and self.duplicate_rows == self.rows:
            return "duplicate"
        return "unoriginal" if self.gated else "accepted"


@dataclass(frozen=True)
class EpochScores:
    epoch: int
    submissions: tuple[SubmissionScore, ...]
    values: dict[str, float]  # account_id -> summed data value over its rows and tasks
    inputs: dict = field(default_factory=dict)  # what the scores were computed from, for the inputs digest
    model_scores: dict[str, float] = field(default_factory=dict)  # account_id -> summed prediction score
    # task -> {prior_rows, new_rows, pool_rows, lake_utility, gain, test_rows}: gain = U'(lake + the rows
    # that played) - U'(lake) on the holdout, what the epoch's data added and what its data values add up to
    pools: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskRows:
    """A task's rows for one epoch's valuation: what the lake held before it, then the epoch's new rows."""

    task: Task
    prior: tuple[AcceptedSubmission, ...]  # every earlier accepted submission, in the ledger's order (the lake)
    new: pa.Table  # features, label, _row_hash, _submission_id: this epoch's accepted rows in arrival order
    submissions: tuple[AcceptedSubmission, ...]  # this epoch's, in arrival order; their rows make up `new`


def task_rows(home: Home, epoch: int, task: Task, subs: Sequence[AcceptedSubmission]) -> TaskRows:
    """Read a task's new rows from the lake files the ledger recorded, and list what the lake held before."""
    columns = _row_columns(task)
    new = pa.concat_tables([read_lake_file(home.path_of(s.lake_path), columns) for s in subs]) if subs else None
    with open_ledger(home.paths.ledger, read_only=True) as con:
        prior = contributions.accepted_before(con, epoch, "dataset", task.name)
    return TaskRows(task, tuple(prior), new if new is not None else _empty_rows(task), tuple(subs))


def value_task_rows(home: Home, rows: TaskRows, test: pa.Table) -> RowValues:
    """The market's valuation of a task's new rows against a labelled test sample (features + label columns).

    The house passes the task's hidden holdout; a validator passes its own sample. Same function, same rules. The
    lake comes from the view kept in the home for that sample (engine.stages.lake_state), caught up first.
    """
    from rewards.marginal import value_new_rows
    from engine.stages.lake_state import lake_view
    from engine.stages.lake_state import task_features as _features
    from engine.stages.lake_state import task_labels as _labels

    task = rows.task
    xt, yt = _features(test, task), _labels(test, task)
    view = lake_view(home, task, xt, yt, rows.prior)
    groups = np.repeat(np.arange(len(rows.submissions)), [s.rows for s in rows.submissions])
    return value_new_rows(
        None, None, None,
        _features(rows.new, task), _labels(rows.new, task), rows.new.column(ROW_HASH_COLUMN).to_numpy(),
        xt, yt, k=task.k, scaling=task.scaling, near_tol=task.near_duplicate_tol, groups=groups, view=view,
    )


def score(home: Home, epoch: int | None = None, snapshot: LakeSnapshot | None = None) -> EpochScores:
    """Value every accepted dataset row of the epoch marginally to the whole lake (rewards.marginal).

    A row equal to, or within the task's near-duplicate tolerance of, any earlier row (an earlier epoch or an
    earlier arrival this epoch, whoever sent it) is a duplicate: it earns nothing and names the submission it copies.
    With a snapshot, exactly its submissions are scored (what the quality check validated); without, they are read.
    """
    paths = home.paths
    if snapshot is None:
        with open_ledger(paths.ledger, read_only=True) as con:
            epoch = current_epoch(con) if epoch is None else epoch
        snapshot = lake_snapshot(home, epoch)
    assert epoch is None or epoch == snapshot.epoch, "the snapshot must be of the epoch being scored"
    epoch, subs = snapshot.epoch, list(snapshot.submissions)
    tasks = load_tasks(paths.tasks)
    scores: list[SubmissionScore] = []
    values: dict[str, float] = {}
    inputs: list = []
    pools: dict[str, dict] = {}
    for task_name in sorted({s.task for s in subs}):
        task = tasks[task_name]
        rows = task_rows(home, epoch, task, [s for s in subs if s.task == task_name])
        from quality.holdout import check_holdout

        holdout = pq.read_table(home.path_of(task.holdout))
        check_holdout(holdout, task.label, task.holdout)  # a hand-edited task may point at any file
        result = value_task_rows(home, rows, holdout)
        pools[task_name] = {"prior_rows": sum(s.rows for s in rows.prior), "new_rows": rows.new.num_rows,
                            "pool_rows": result.pool_rows,
                            "lake_utility": result.lake_utility, "gain": result.gain, "test_rows": holdout.num_rows}
        for sub_score in _per_submission(rows, result):
            scores.append(sub_score)
            values[sub_score.account_id] = values.get(sub_score.account_id, 0.0) + sub_score.value
        inputs.extend([s.submission_id, s.account_id, task_name, s.lake_path] for s in rows.submissions)
    model_scores, prediction_scores = score_predictions(home, epoch, tasks, snapshot)
    scores.extend(prediction_scores)
    inputs.extend([s.submission_id, s.account_id, s.task, "predictions"] for s in prediction_scores)
    return EpochScores(epoch, tuple(scores), values, {"submissions": inputs}, model_scores, pools)


def weights_from_sample(home: Home, epoch: int, sample: pa.Table) -> dict[str, float]:
    """What an honest validator sends: the market's valuation of the epoch's new rows on its own labelled sample
    (one table holding every scored task's features and label), as house-style weights by contributor public key."""
    from rewards.house import house_weights

    with open_ledger(home.paths.ledger, read_only=True) as con:
        subs = contributions.accepted(con, epoch, "dataset")
        keys = {a.account_id: a.public_key for a in accounts.all_accounts(con, "contributor")}
    tasks = load_tasks(home.paths.tasks)
    per_account: dict[str, float] = {}
    for task_name in sorted({s.task for s in subs}):
        task = tasks[task_name]
        if not set(task.columns()) <= set(sample.column_names):
            continue  # the validator holds no sample for this task
        rows = task_rows(home, epoch, task, [s for s in subs if s.task == task_name])
        for sub_score in _per_submission(rows, value_task_rows(home, rows, sample)):
            per_account[sub_score.account_id] = per_account.get(sub_score.account_id, 0.0) + sub_score.value
    return {keys[a]: w for a, w in house_weights(per_account).items() if a in keys}


def _per_submission(rows: TaskRows, result: RowValues) -> list[SubmissionScore]:
    """Each submission's summed value, duplicate rows and the submissions those rows copy."""
    # duplicate_of counts every row given so far: the lake's submissions' rows in order, then the new rows.
    every = [*rows.prior, *rows.submissions]
    ends = np.cumsum([s.rows for s in every], dtype=np.int64)
    every_ids = np.array([s.submission_id for s in every], dtype=object)
    out: list[SubmissionScore] = []
    start = 0
    for index, sub in enumerate(rows.submissions):
        stop = start + sub.rows
        dup = result.duplicate_of[start:stop]
        copied = every_ids[np.searchsorted(ends, dup[dup >= 0], side="right")]
        _, first = np.unique(copied, return_index=True)
        sources = tuple(str(copied[i]) for i in sorted(first))
        out.append(SubmissionScore(sub.submission_id, sub.account_id, rows.task.name, sub.rows,
                                   int(np.count_nonzero(dup >= 0)), math.fsum(result.values[start:stop].tolist()),
                                   sources, **_originality_figures(result, index, start, stop)))
        start = stop
    assert start == rows.new.num_rows, "the recorded row counts must add up to the rows read from the lake"
    return out


def _originality_figures(result: RowValues, index: int, start: int, stop: int) -> dict:
    """A submission's originality figures from the row-level result (rows start:stop, submission `index`)."""
    o = result.originality
    if o is None:
        return {"value_without_originality": math.fsum(result.values[start:stop].tolist())}
    judged = o.judged[start:stop]
    p = o.p_value[start:stop][judged]
    return {
        "judged_rows": int(judged.sum()),
        "unoriginal_rows": int(result.unoriginal[start:stop].sum()),
        "gate_rows": int(o.below(GATE_ALPHA)[start:stop].sum()),
        "gate_p": float(result.group_gate_p[index]) if result.group_gate_p is not None and result.group_gate_p.size
        else 1.0,
        "median_p": float(np.median(p)) if p.size else None,
        "value_without_originality": math.fsum(result.values_without_originality[start:stop].tolist()),
    }


def score_predictions(home: Home, epoch: int, tasks: dict[str, Task],
                      snapshot: LakeSnapshot | None = None) -> tuple[dict[str, float], list[SubmissionScore]]:
    """Score the epoch's predictions on each task's challenge against the hidden labels (rewards.model_scores).

    A contributor's latest predictions for a task in the epoch count; earlier ones score 0. The meta-model weighs
    each contributor by its stake at the epoch's start (equal weights when nobody has stake).
    """
    snapshot = snapshot or lake_snapshot(home, epoch)
    subs, stakes = snapshot.predictions, dict(snapshot.contributor_stakes)
    totals: dict[str, float] = {}
    out: list[SubmissionScore] = []
    for task_name in sorted({s.task for s in subs}):
        from rewards.model_scores import score_models  # only when there are predictions to score

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


def _row_columns(task: Task) -> list[str]:
    return [*task.columns(), ROW_HASH_COLUMN, "_submission_id"]


def _empty_rows(task: Task) -> pa.Table:
    return task.arrow_schema().empty_table().append_column(ROW_HASH_COLUMN, pa.array([], pa.uint64())).append_column(
        "_submission_id", pa.array([], pa.string()))

