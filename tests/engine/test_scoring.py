"""Scoring in the market: exact and near duplicates earn nothing, their first submitter keeps the credit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import digits_table
from engine.epoch import run_epoch

pytestmark = pytest.mark.slow


def jitter(table: pa.Table, eps: float, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    out = table
    for i, name in enumerate(table.column_names[:-1]):
        # kept inside the task's declared pixel bounds [0, 16], so only the jitter tells the copy apart
        col = np.clip(table.column(name).to_numpy() + rng.uniform(-eps, eps, table.num_rows), 0.0, 16.0)
        out = out.set_column(i, name, pa.array(col))
    return out


def test_near_and_exact_copies_from_other_keys_earn_nothing(market):
    original = digits_table(300, 380)
    market.submit("alice", original, "alice.parquet")
    run_epoch(market.home, close=True)
    market.submit("bob", jitter(original, 1e-6), "bob-jittered.parquet")  # a near copy, next epoch
    market.submit("carol", original, "carol-exact.parquet")  # an exact copy
    market.submit("alice", digits_table(380, 440), "alice-2.parquet")
    run = run_epoch(market.home, close=True)
    by_file = {s.account_id: s for s in run.scores.submissions}
    names = {v: k for k, v in _ids(market).items()}
    scores = {names[a]: s for a, s in by_file.items()}
    assert scores["bob"].duplicate_rows == 80 and scores["bob"].value == 0.0 and scores["bob"].status == "duplicate"
    assert scores["carol"].duplicate_rows == 80 and scores["carol"].value == 0.0
    assert scores["alice"].duplicate_rows == 0 and scores["alice"].value > 0


def test_splitting_over_keys_earns_what_one_key_would(market, tmp_path):
    """Values are per row: the same rows over two keys sum to the value of one key's submission."""
    rows = digits_table(300, 400)
    market.submit("alice", rows.slice(0, 50), "a.parquet")
    market.submit("bob", rows.slice(50, 50), "b.parquet")
    split = run_epoch(market.home).scores.values
    from engine.home import open_home
    from engine import actions

    other = open_home(tmp_path / "other")
    import shutil

    shutil.copytree(market.home.paths.tasks, other.paths.tasks, dirs_exist_ok=True)
    shutil.copytree(market.home.paths.holdout, other.paths.holdout, dirs_exist_ok=True)
    actions.keygen(other, "solo")
    actions.register(other, "solo", "contributor")
    path = market.write("solo.parquet", rows)
    actions.submit(other, path, key="solo", task="digits")
    (solo,) = run_epoch(other).scores.values.values()
    assert sum(split.values()) == pytest.approx(solo, abs=1e-12)


def _ids(market) -> dict[str, str]:
    from ledger import accounts
    from ledger.db import open_ledger

    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return {a.name: a.account_id for a in accounts.all_accounts(con)}
