"""`tributary audit` checks what someone trusting these books expects: contiguous epochs, every accepted submission
valued, stakes that equal the books, balances that equal their transfers, states that agree with settlement."""

from __future__ import annotations

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from tests.conftest import digits_table
from engine.epoch import run_epoch


@pytest.mark.slow
def test_each_check_passes_untouched_and_names_a_tampered_row(market) -> None:
    market.submit("alice", digits_table(300, 360), "a.parquet")
    run_epoch(market.home, close=True)
    with open_ledger(market.home.paths.ledger) as con:
        assert audit(con).ok, audit(con).problems
        sub = con.execute("SELECT submission_id FROM contributions WHERE status = 'accepted'").fetchone()[0]
        con.execute("UPDATE contributions SET value = NULL WHERE submission_id = ?", [sub])
        val = con.execute("SELECT account_id FROM rewards WHERE epoch = 1 AND role = 'validator' "
                          "ORDER BY account_id LIMIT 1").fetchone()[0]
        con.execute("UPDATE rewards SET stake = stake + 1 WHERE epoch = 1 AND account_id = ?", [val])
        con.execute("UPDATE balance_totals SET liquid = liquid + 7 WHERE account_id = 'owner'")
        con.execute("UPDATE epochs SET state = 'open' WHERE epoch = 1")
        con.execute("INSERT INTO epochs (epoch, starts_at, state) VALUES (9, now(), 'open')")
        problems = "\n".join(audit(con).problems)
    assert f"contribution {sub} was accepted but has no value" in problems
    assert f"rewards.stake of validator {val} is" in problems and "staked at the epoch's start" in problems
    assert "account owner: balance_totals does not equal the sum of its transfers" in problems
    assert "epoch 1: state 'open' disagrees with its settled_at" in problems
    assert "epochs jump from 2 to 9" in problems


@pytest.mark.slow
def test_audit_recomputes_the_inputs_digest_and_checks_the_document_against_the_tables(market) -> None:
    import json

    from protocol.canonical import canonical_json

    market.submit("alice", digits_table(300, 360), "a.parquet")
    run_epoch(market.home, close=True)
    with open_ledger(market.home.paths.ledger) as con:
        assert con.execute("SELECT inputs_version FROM epochs WHERE epoch = 1").fetchone()[0] == 1
        doc = json.loads(con.execute("SELECT document FROM epoch_inputs WHERE epoch = 1").fetchone()[0])
        edited = dict(doc, emission=doc["emission"] + 1)
        con.execute("UPDATE epoch_inputs SET document = ? WHERE epoch = 1", [canonical_json(edited).decode()])
        problems = "\n".join(audit(con).problems)
        assert "epoch 1: its inputs document digests to" in problems and "epoch_inputs was changed" in problems
        # A document that still hashes to the settled digest but disagrees with the tables: forge the digest too
        # (and so the chain link), and the table checks still name the disagreement.
        from ledger.digest import digest_text

        text = canonical_json(edited).decode()
        con.execute("UPDATE epochs SET inputs_digest = ? WHERE epoch = 1", [digest_text(text)])
        problems = "\n".join(audit(con).problems)
    assert "epoch 1: the inputs document names epoch 1 and emission" in problems
    assert "hash" in problems  # the chain link no longer matches the forged digest
