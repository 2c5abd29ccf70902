"""Model contributions end to end: a task with a challenge, predictions through ingest, scores into the ledger."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ledger.db import open_ledger
from quality.task_toml import load_task
from tests.conftest import TASK, digits_table
from engine import actions
from engine.epoch import run_epoch
from engine.home import open_home

pytestmark = pytest.mark.slow


def predictions(task, ids, probs) -> pa.Table:
    cols = {"row_id": pa.array(ids, pa.int64())}
    for j, col in enumerate(task.prediction_columns()[1:]):
        cols[col] = probs[:, j]
    return pa.table(cols)


@pytest.fixture()
def challenge_market(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    home = open_home(tmp_path / "home")
    work = tmp_path / "work"
    work.mkdir()
    import pyarrow.parquet as pq

    pq.write_table(digits_table(0, 300), work / "holdout.parquet")
    pq.write_table(digits_table(300, 500), work / "challenge.parquet")
    task = actions.task_init(home, TASK, work / "holdout.parquet", "label", bounds={"*": (0.0, 16.0)},
                             challenge=work / "challenge.parquet")
    for name in ("alice", "bob", "carol", "dave"):
        actions.keygen(home, name)
        actions.register(home, name, "contributor")
    public = pq.read_table(home.root / task.challenge)
    x_challenge = np.column_stack([public.column(f).to_numpy() for f in task.feature_names()])
    train = digits_table(500, 1100)
    x = np.column_stack([train.column(f).to_numpy() for f in task.feature_names()])
    y = train.column("label").to_numpy()
    models = {
        # smoothed: a raw KNN vote gives probability 0 to classes it never saw nearby, which log-loss punishes hard
        "alice": 0.9 * KNeighborsClassifier(9).fit(x, y).predict_proba(x_challenge) + 0.01,
        "carol": LogisticRegression(max_iter=3000).fit(x[:, :5], y).predict_proba(x_challenge[:, :5]),
    }
    return home, work, task, public.column("row_id").to_pylist(), models


def test_task_init_publishes_features_and_hides_labels(challenge_market):
    home, _, task, ids, _ = challenge_market
    assert load_task(home.paths.tasks / f"{TASK}.toml").challenge == task.challenge
    import pyarrow.parquet as pq

    public = pq.read_table(home.root / task.challenge)
    assert "label" not in public.column_names and public.column_names[0] == "row_id"
    assert ids == list(range(200))


def test_predictions_are_scored_and_paid(challenge_market):
    home, work, task, ids, models = challenge_market
    import pyarrow.parquet as pq

    def send(name: str, table: pa.Table) -> None:
        pq.write_table(table, work / f"{name}.parquet")
        actions.submit(home, work / f"{name}.parquet", key=name, task=TASK, kind="predictions")

    send("alice", predictions(task, ids, models["alice"]))
    send("carol", predictions(task, ids, models["carol"]))
    prior = np.full((len(ids), 10), 0.1)
    send("dave", predictions(task, ids, prior))  # a constant prior: improves on nothing
    bad = models["alice"].copy()
    bad[0] *= 0.5
    send("bob", predictions(task, ids, bad))  # row 0 sums to 0.5
    run = run_epoch(home, close=True)

    assert run.ingest.accepted == 3 and run.ingest.reasons == {"schema_mismatch": 1}
    scores = run.scores.model_scores
    by_name = {}
    with open_ledger(home.paths.ledger, read_only=True) as con:
        names = dict(con.execute("SELECT account_id, name FROM accounts").fetchall())
        (detail,) = con.execute("SELECT detail FROM quarantine").fetchone()
        rewards = {names[a]: (amount, ms) for a, amount, ms in
                   con.execute("SELECT account_id, amount, model_score FROM rewards WHERE epoch = 1").fetchall()}
    for account, score in scores.items():
        by_name[names[account]] = score
    assert "row 0: probabilities sum to 0.5" in detail and "p_*" in detail
    assert by_name["alice"] > 0 and by_name["carol"] > 0
    assert by_name["dave"] == pytest.approx(0.0, abs=1e-12)
    assert rewards["alice"][0] > 0 and rewards["carol"][0] > 0 and rewards["dave"][0] == 0
    assert rewards["alice"][1] == pytest.approx(by_name["alice"])


def test_missing_challenge_rows_fail_the_predictions_suite(challenge_market):
    home, work, task, ids, models = challenge_market
    import pyarrow.parquet as pq

    pq.write_table(predictions(task, ids[:150], models["alice"][:150]), work / "short.parquet")
    actions.submit(home, work / "short.parquet", key="alice", task=TASK, kind="predictions")
    run = run_epoch(home)
    assert run.ingest.reasons == {"quality_failed": 1}
    with open_ledger(home.paths.ledger, read_only=True) as con:
        (detail,) = con.execute("SELECT detail FROM quarantine").fetchone()
    assert "150 rows, but 200 expected" in detail
