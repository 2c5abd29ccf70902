"""Governance by stake, driven through the CLI's signed requests and real epochs: a proposal is tallied when its
epoch settles with the stakes at that epoch's start, the latest vote of each key counts, and a passed value applies
from the next epoch, never the one being settled. Also the registration fee (burned) and contributors' auto-stake.

In the `market` fixture the house holds 10,000 staked tokens from genesis and val stakes 1,000 in epoch 1 (counting
from epoch 2), so at epoch 2's start the active stake is 11,000 tokens: val alone (9%) cannot pass anything.
"""

from __future__ import annotations

import json

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.governance import stakes_at_start
from ledger.money import UNITS_PER_TOKEN
from tests.conftest import TASK, digits_table
from tests.tributary.test_cli import run
from engine import actions
from engine.epoch import run_epoch

TOKENS_1000 = 1_000 * UNITS_PER_TOKEN


def _rows(home, sql: str, params: list | None = None) -> list[tuple]:
    with open_ledger(home.paths.ledger, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _to_epoch_2(market) -> int:
    """Settle epoch 1 (the fixture's setup) so that val's stake counts; returns the open epoch (2)."""
    first = run_epoch(market.home, close=True)
    return first.ingest.epoch + 1


@pytest.mark.slow
def test_a_passed_proposal_changes_the_emission_from_the_next_epoch(market) -> None:
    home = market.home
    epoch = _to_epoch_2(market)
    run("propose", "epoch_emission_units", str(2 * TOKENS_1000), "--key", "val", home=home.root)
    settled = run_epoch(home, close=True)
    assert settled.ingest.reasons == {} and settled.ingest.accepted == 1
    ((pid,),) = _rows(home, "SELECT proposal_id FROM proposals")
    run("vote", str(pid), "yes", "--key", "house", home=home.root)  # lands in epoch 3: the proposal is tallied
    third = run_epoch(home, close=True)
    assert third.ingest.reasons == {"proposal_closed": 1}
    (row,) = _rows(home, "SELECT status, yes_stake, no_stake, active_stake, applies_from FROM proposals")
    with open_ledger(home.paths.ledger, read_only=True) as con:
        active = sum(stakes_at_start(con, epoch).values())  # the house's 10,000 + epoch 1's dividends, val's 1,000
    assert active > 10 * TOKENS_1000
    assert row == ("rejected", TOKENS_1000, 0, active, None)  # val's stake alone is no majority

    run("propose", "epoch_emission_units", str(2 * TOKENS_1000), "--key", "val", home=home.root)
    run_epoch(home, close=False)  # lands the proposal, so the vote can name it
    ((pid2,),) = _rows(home, "SELECT max(proposal_id) FROM proposals")
    run("vote", str(pid2), "yes", "--key", "house", home=home.root)
    fourth = run_epoch(home, close=True)
    e4 = fourth.ingest.epoch
    (row,) = _rows(home, "SELECT status, yes_stake, active_stake, applies_from FROM proposals WHERE proposal_id = ?",
                   [pid2])
    assert row[0] == "passed" and row[1] == row[2] and row[3] == e4 + 1
    # Never the epoch being settled: epoch 4 minted the old emission, epoch 5 mints the new one.
    assert fourth.settlement.emission == TOKENS_1000
    fifth = run_epoch(home, close=True)
    assert fifth.settlement.emission == 2 * TOKENS_1000
    params = dict(((e, v), pid) for e, v, pid in _rows(
        home, "SELECT epoch, value, proposal_id FROM parameters WHERE setting = 'epoch_emission_units'"))
    assert params[(e4, str(TOKENS_1000))] is None  # settings.toml's value, set by no proposal
    assert params[(e4 + 1, str(2 * TOKENS_1000))] == pid2
    assert params[(e4 + 2, str(2 * TOKENS_1000))] == pid2  # the open epoch, carried forward
    (paid,) = _rows(home, "SELECT to_contributors + to_validators + to_owner FROM emission_by_epoch WHERE epoch = ?",
                    [e4 + 1])
    assert paid[0] == 2 * TOKENS_1000
    with open_ledger(home.paths.ledger, read_only=True) as con:
        assert audit(con).ok, audit(con).problems
    assert epoch == 2


@pytest.mark.slow
def test_the_latest_vote_of_each_key_counts(market) -> None:
    home = market.home
    _to_epoch_2(market)
    run("propose", "kappa", "0.6", "--key", "val", home=home.root)
    run_epoch(home, close=False)
    ((pid,),) = _rows(home, "SELECT proposal_id FROM proposals")
    run("vote", str(pid), "yes", "--key", "house", home=home.root)
    run("vote", str(pid), "no", "--key", "house", home=home.root)  # changes its mind: this one counts
    run_epoch(home, close=True)
    (row,) = _rows(home, "SELECT status, yes_stake, no_stake FROM proposals")
    assert row[0] == "rejected" and row[1] == TOKENS_1000 and row[2] > 10 * TOKENS_1000  # the house's stake, no
    assert _rows(home, "SELECT count(*) FROM votes WHERE proposal_id = ?", [pid])[0][0] == 3  # val's implicit yes


@pytest.mark.slow
def test_what_may_not_be_voted_on_is_quarantined_naming_the_rule(market) -> None:
    home = market.home
    _to_epoch_2(market)
    run("propose", "commit_reveal", "false", "--key", "val", home=home.root)  # not on the governed list
    run("propose", "kappa", "2.5", "--key", "val", home=home.root)  # out of its range
    run("propose", "kappa", "0.4", "--key", "alice", home=home.root)  # a contributor, with no stake
    run("vote", "99", "yes", "--key", "val", home=home.root)  # no such proposal
    result = run_epoch(home, close=False)
    assert result.ingest.reasons == {"not_governed": 1, "out_of_range": 1, "not_staked": 1, "unknown_proposal": 1}
    details = dict(_rows(home, "SELECT c.reason, q.detail FROM quarantine q JOIN contributions c USING (submission_id)"))
    assert "'commit_reveal' cannot be voted on" in details["not_governed"] and "kappa" in details["not_governed"]
    assert "must be a number in [0, 1]" in details["out_of_range"]
    assert _rows(home, "SELECT count(*) FROM proposals")[0][0] == 0
    # The CLI checks the shape before signing: a vote that is neither yes nor no never leaves the machine.
    r = run("vote", "1", "maybe", "--key", "val", home=home.root, check=False)
    assert r.returncode != 0 and "yes or no" in (r.stderr + r.stdout)


@pytest.mark.slow
def test_governance_closes_a_task(market) -> None:
    home = market.home
    _to_epoch_2(market)
    run("propose", f"task.{TASK}.open", "false", "--key", "house", home=home.root)  # the house alone is a majority
    run_epoch(home, close=True)
    assert _rows(home, "SELECT status FROM proposals")[0][0] == "passed"
    market.submit("alice", digits_table(300, 360), "closed.parquet")
    result = run_epoch(home, close=False)
    assert result.ingest.reasons == {"task_closed": 1}
    (detail,) = _rows(home, "SELECT detail FROM quarantine WHERE detail LIKE '%closed by governance%'")
    assert "closed.parquet" in detail[0] and f"task.{TASK}.open = false" in detail[0]
    values = dict(_rows(home, "SELECT epoch, value FROM parameters WHERE setting = ?", [f"task.{TASK}.open"]))
    assert values[result.ingest.epoch] == "false" and values[result.ingest.epoch - 1] == "true"


@pytest.mark.slow
def test_registration_fee_is_burned_from_the_sponsor(market) -> None:
    home = market.home
    (home.root / "settings.toml").write_text(f"registration_fee_units = {5 * UNITS_PER_TOKEN}\n")
    actions.keygen(home, "dave")
    r = run("register", "dave", "--role", "contributor", home=home.root, check=False)
    assert r.returncode == 1 and "--fee-from" in r.stderr
    r = run("register", "dave", "--role", "contributor", "--fee-from", "alice", home=home.root, check=False)
    assert r.returncode == 1 and "0 units liquid" in r.stderr and "registration_fee" in r.stderr  # alice: nothing
    assert _rows(home, "SELECT count(*) FROM accounts WHERE name = 'dave'")[0][0] == 0  # nothing half-done
    actions.grant(home, "alice", "7")
    run("register", "dave", "--role", "contributor", "--fee-from", "alice", home=home.root)
    assert _rows(home, "SELECT liquid FROM balances WHERE account_id = 'burn'")[0][0] == 5 * UNITS_PER_TOKEN
    assert _rows(home, "SELECT b.liquid FROM balances b JOIN accounts a USING (account_id) WHERE a.name = 'alice'"
                 )[0][0] == 2 * UNITS_PER_TOKEN
    assert _rows(home, "SELECT fee_units FROM accounts WHERE name = 'dave'")[0][0] == 5 * UNITS_PER_TOKEN
    with open_ledger(home.paths.ledger, read_only=True) as con:
        assert audit(con).ok, audit(con).problems


@pytest.mark.slow
def test_a_contributor_may_auto_stake_its_rewards(market) -> None:
    home = market.home
    run("auto-stake", "on", "--key", "alice", home=home.root)
    run("auto-stake", "on", "--key", "val", home=home.root)  # validators always compound: refused, with the rule
    market.submit("alice", digits_table(300, 400), "a.parquet")
    market.submit("bob", digits_table(400, 500, seed=1), "b.parquet")
    first = run_epoch(home, close=True)
    assert first.ingest.reasons == {"kind_not_allowed": 1}
    rows = dict(((n, b), amt) for n, b, amt in _rows(
        home, "SELECT a.name, t.credit_bucket, t.amount FROM transfers t JOIN accounts a ON a.account_id = "
              "t.credit_account WHERE t.kind = 'incentive' AND t.epoch = ?", [first.ingest.epoch]))
    assert rows.get(("alice", "staked"), 0) > 0 and ("alice", "liquid") not in rows
    assert rows.get(("bob", "liquid"), 0) > 0
    staked = _rows(home, "SELECT b.staked FROM balances b JOIN accounts a USING (account_id) WHERE a.name = 'alice'")
    assert staked[0][0] == rows[("alice", "staked")]
    doc = json.loads(_rows(home, "SELECT value FROM requests WHERE action = 'auto_stake'")[0][0])
    assert doc is True
