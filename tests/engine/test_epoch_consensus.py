"""The market's consensus step: plain weights with commit-reveal off, and validator permits."""

from __future__ import annotations

import json

import pytest

from ledger import accounts
from ledger.db import open_ledger
from tests.conftest import digits_table
from engine import actions
from engine.epoch import run_epoch
from engine.home import open_home

pytestmark = pytest.mark.slow


def _val_reward(home) -> tuple[int, float]:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        val = accounts.get(con, "val").account_id
        return con.execute("SELECT amount, dividends FROM rewards WHERE epoch = 2 AND account_id = ?", [val]).fetchone()


@pytest.mark.parametrize("permits,paid", [(128, True), (1, False)])
def test_plain_weights_count_only_with_a_permit(market, permits, paid):
    (market.home.root / "settings.toml").write_text(f"commit_reveal = false\nmax_allowed_validators = {permits}\n")
    home = open_home(market.home.root)
    market.home = home
    market.submit("alice", digits_table(300, 360), "a1.parquet")
    run_epoch(home, close=True)  # val's stake counts from epoch 2
    market.submit("alice", digits_table(360, 420), "a2.parquet")
    market.submit("bob", digits_table(420, 480), "b2.parquet")
    run_epoch(home)
    with open_ledger(home.paths.ledger, read_only=True) as con:
        keys = {a.name: a.public_key for a in accounts.all_accounts(con, "contributor")}
    weights = market.work / "w.json"
    weights.write_text(json.dumps({"epoch": 2, "weights": {keys["alice"]: 0.5, keys["bob"]: 0.5}}))
    actions.submit(home, weights, key="val", task=None, kind="weights")
    run = run_epoch(home, close=True)
    assert run.ingest.accepted == 1 and run.ingest.quarantined == 0
    amount, dividends = _val_reward(home)
    assert (amount > 0 and dividends > 0) if paid else (amount == 0 and dividends == 0.0)
