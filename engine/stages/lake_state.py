"""The valuation's state kept in the home between epochs: one LakeView per task and test sample.

`state/valuation/<task>/<key>/` holds the view of the task's lake for one test sample (the holdout, or a validator's
own sample), where <key> digests the sample and the task's valuation parameters, so a changed holdout or k gets a
view of its own, built from the lake. A view records which accepted submissions it folded in, in the ledger's order;
whoever needs it catches it up with the submissions accepted since (a settled epoch's, read from their lake files),
so an epoch costs what its new rows cost. The state is derived data: a crash between a settlement and the view's
update ends as an uninterrupted run would (the next reader folds the same rows in, in the same order, and the
neighbour order is exact), a view that does not match the ledger is rebuilt, and `audit` rebuilds each one from the
lake and compares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ledger import contributions
from ledger.contributions import AcceptedSubmission
from ledger.db import open_ledger
from pipelines.lake import ROW_HASH_COLUMN, read_lake_file
from quality.task import Task
from rewards.lake_view import LakeView, sample_digest
from engine.home import Home

STATE_DIR = "state/valuation"


def view_folder(home: Home, task: Task, x_test: np.ndarray, y_test: np.ndarray) -> Path:
    """Where the view of `task`'s lake for this test sample lives."""
    params = f"{sample_digest(x_test, y_test)}|k={task.k}|{task.scaling}|{task.near_duplicate_tol!r}"
    key = hashlib.blake2b(params.encode(), digest_size=12).hexdigest()
    return home.root / STATE_DIR / task.name / key


def lake_view(home: Home, task: Task, x_test: np.ndarray, y_test: np.ndarray,
              subs: Sequence[AcceptedSubmission]) -> LakeView:
    """The task's lake as this sample's valuation sees it, caught up with `subs`: the task's accepted submissions
    before the epoch, in the ledger's order (contributions.accepted_before)."""
    folder = view_folder(home, task, x_test, y_test)
    view = _load(folder)
    names = [s.submission_id for s in subs]
    if view is None or view.folded != names[:len(view.folded)]:
        view = _build(task, x_test, y_test)
    missing = list(subs[len(view.folded):])
    if missing or not (folder / "view.json").exists():
        _fold(home, view, task, missing)
        view.save(folder)
    return view


def _load(folder: Path) -> LakeView | None:
    if not (folder / "view.json").exists():
        return None
    try:
        return LakeView.load(folder, mmap=True)
    except ValueError:  # torn or foreign: derived data, so rebuild it
        return None


def _build(task: Task, x_test: np.ndarray, y_test: np.ndarray) -> LakeView:
    d = x_test.shape[1]
    return LakeView.build(np.zeros((0, d)), np.asarray(y_test)[:0], np.zeros(0, dtype=np.uint64), x_test, y_test,
                          k=task.k, scaling=task.scaling, near_tol=task.near_duplicate_tol)


def _fold(home: Home, view: LakeView, task: Task, subs: list) -> None:
    """Fold submissions' lake rows into the view, in order (one extend: one pass of the neighbour search), recording
    their ids."""
    if not subs:
        return
    columns = [*task.columns(), ROW_HASH_COLUMN]
    table = pa.concat_tables([read_lake_file(home.path_of(s.lake_path), columns) for s in subs])
    view.extend(task_features(table, task), task_labels(table, task), table.column(ROW_HASH_COLUMN).to_numpy())
    view.folded.extend(s.submission_id for s in subs)


def task_features(table: pa.Table, task: Task) -> np.ndarray:
    """A task's feature columns as one float64 matrix (rows x features).

    Filled one record batch at a time (a lake file's rows): each block of the matrix is written while it is in
    cache, about 4x faster than stacking whole columns (300,000 rows x 32: 32 ms against 143 ms).
    """
    names = task.feature_names()
    out = np.empty((table.num_rows, len(names)), dtype=np.float64)
    lo = 0
    for batch in table.select(names).to_batches():
        block = out[lo:lo + batch.num_rows]
        for j in range(len(names)):
            block[:, j] = batch.column(j).to_numpy(zero_copy_only=False)
        lo += batch.num_rows
    return out


def task_labels(table: pa.Table, task: Task) -> np.ndarray:
    """A task's label column as a NumPy array."""
    return table.column(task.label).to_numpy(zero_copy_only=False)


def refresh_holdout_views(home: Home, settled_epoch: int) -> int:
    """After a settlement: fold the settled epoch's accepted rows into each task's holdout view, so the next epoch's
    scoring reads nothing but its own rows. Returns how many views moved. Skipping this (a crash) costs time only."""
    import pyarrow.parquet as pq

    from quality.task_toml import load_tasks

    with open_ledger(home.paths.ledger, read_only=True) as con:
        names = sorted({s.task for s in contributions.accepted(con, settled_epoch, "dataset")})
        lakes = {name: contributions.accepted_before(con, settled_epoch + 1, "dataset", name) for name in names}
    tasks = load_tasks(home.paths.tasks)
    for name in names:
        task = tasks[name]
        holdout = pq.read_table(home.path_of(task.holdout))
        lake_view(home, task, task_features(holdout, task), task_labels(holdout, task), lakes[name])
    return len(names)


def audit_views(home: Home) -> tuple[int, list[str]]:
    """Rebuild every kept holdout view from the lake and compare: (views checked, problems). Read-only.

    A view must have folded a prefix of the ledger's accepted submissions, in order, and hold exactly the arrays a
    build from those submissions' lake files gives.
    """
    import pyarrow.parquet as pq

    from quality.task_toml import load_tasks

    problems: list[str] = []
    checked = 0
    tasks = load_tasks(home.paths.tasks)
    for name, task in sorted(tasks.items()):
        holdout = pq.read_table(home.path_of(task.holdout))
        xt, yt = task_features(holdout, task), task_labels(holdout, task)
        folder = view_folder(home, task, xt, yt)
        if not (folder / "view.json").exists():
            continue
        where = folder.relative_to(home.root)
        kept = _load(folder)
        if kept is None:
            problems.append(f"{where}: unreadable or torn (derived data: delete the folder and it is rebuilt)")
            continue
        checked += 1
        with open_ledger(home.paths.ledger, read_only=True) as con:
            subs = contributions.accepted_before(con, 2**62, "dataset", name)
        if [s.submission_id for s in subs[:len(kept.folded)]] != kept.folded:
            problems.append(f"{where}: folded submissions are not the ledger's accepted ones, in order")
            continue
        fresh = _build(task, xt, yt)
        _fold(home, fresh, task, subs[:len(kept.folded)])
        differ = kept.same_arrays(fresh)
        if differ:
            problems.append(f"{where}: {', '.join(differ)} differ from a rebuild from the lake "
                            "(derived data: delete the folder and it is rebuilt)")
    return checked, problems
