"""Stake, unstake and transfer are signed requests that ingest verifies like any submission, applied in the
transaction that records them; one the balance cannot cover is quarantined with its reason and moves nothing."""

from __future__ import annotations

import shutil

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from ledger.money import UNITS_PER_TOKEN
from ledger.transfers import stakes_at_epoch_start
from pipelines.manifest import MANIFEST_SUFFIX
from tests.tributary.test_cli import run
from engine import actions
from engine.epoch import run_epoch


def _one(con, sql: str, params: list):
    return con.execute(sql, params).fetchone()


@pytest.mark.slow
def test_signed_requests_move_only_what_the_sender_holds(market) -> None:
    home = market.home
    actions.grant(home, "val", "100")  # liquid, to stake and send
    run("stake", "val", "40", "--key", "val", home=home.root)
    run("unstake", "val", "10", "--key", "val", home=home.root)
    run("transfer", "alice", "5", "--key", "val", home=home.root)
    run("stake", "alice", "6", "--key", "alice", home=home.root)  # alice holds the 5 just sent: refused
    first = run_epoch(home, close=True)
    assert first.ingest.reasons == {"insufficient_funds": 1}
    with open_ledger(home.paths.ledger, read_only=True) as con:
        val, alice = (_one(con, "SELECT account_id FROM accounts WHERE name = ?", [n])[0] for n in ("val", "alice"))
        epoch = first.ingest.epoch
        assert _one(con, "SELECT liquid, unbonding FROM balances WHERE account_id = ?", [val]) == \
            (55 * UNITS_PER_TOKEN, 10 * UNITS_PER_TOKEN)
        assert _one(con, "SELECT liquid FROM balances WHERE account_id = ?", [alice])[0] == 5 * UNITS_PER_TOKEN
        # Stake lands in this epoch and counts from the next: this epoch's consensus saw the stake before it
        # (the fixture's 1000, staked in this same open epoch, counts from the next too).
        assert stakes_at_epoch_start(con, epoch).get(val, 0) == 0
        compounded = _one(con, "SELECT COALESCE(SUM(amount), 0) FROM transfers WHERE epoch = ? AND credit_account = ? "
                          "AND credit_bucket = 'staked' AND kind NOT IN ('stake', 'grant')", [epoch, val])[0]
        assert stakes_at_epoch_start(con, epoch + 1)[val] == (1000 + 40 - 10) * UNITS_PER_TOKEN + compounded
        assert _one(con, "SELECT staked FROM balances WHERE account_id = ?", [val])[0] == \
            stakes_at_epoch_start(con, epoch + 1)[val]
        refused = _one(con, "SELECT c.status, c.reason, q.detail FROM contributions c JOIN quarantine q "
                       "USING (submission_id) WHERE c.account_id = ? AND c.kind = 'request'", [alice])
        assert refused[0] == "quarantined" and refused[1] == "insufficient_funds" and "stake of" in refused[2]
        assert _one(con, "SELECT count(*) FROM requests WHERE account_id = ?", [alice])[0] == 0
        assert _one(con, "SELECT release_epoch FROM requests WHERE action = 'unstake'", [])[0] == \
            epoch + home.settings.unstake_cooldown_epochs
        assert audit(con).ok, audit(con).problems


@pytest.mark.slow
def test_a_replayed_request_is_refused(market) -> None:
    home = market.home
    actions.grant(home, "val", "10")
    manifest, _ = actions.request(home, "stake", "10", key="val")
    saved = market.work / "saved"
    saved.mkdir()
    for p in (manifest, manifest.with_name(manifest.name.removesuffix(MANIFEST_SUFFIX))):
        shutil.copy(p, saved / p.name)
    run_epoch(home, close=True)
    for p in saved.iterdir():  # the very same signed files again, in a later epoch
        shutil.copy(p, home.paths.drop / p.name)
    again = run_epoch(home, close=True)
    assert again.ingest.reasons == {"replayed_nonce": 1}
    with open_ledger(home.paths.ledger, read_only=True) as con:
        assert _one(con, "SELECT count(*) FROM transfers WHERE kind = 'stake' AND memo = ''", [])[0] >= 1
        assert _one(con, "SELECT count(*) FROM requests", [])[0] == 1


@pytest.mark.slow
def test_a_malformed_request_names_the_field(market) -> None:
    payload = market.work / "bad.json"
    payload.write_text('{"action": "stake", "amount_units": -3}')
    actions.submit(market.home, payload, key="val", task=None, kind="request")
    result = run_epoch(market.home, close=False)
    assert result.ingest.reasons == {"schema_mismatch": 1}
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        detail = _one(con, "SELECT detail FROM quarantine", [])[0]
    assert "bad.json" in detail and "amount_units" in detail
