"""The one nonce rule (docs/PROTOCOL.md §4, step 7), attacked: in ingest's ARRIVAL order, a verified submission whose
nonce is not above the highest nonce of every earlier verified submission of its key (any kind, this run or an
earlier one) is `replayed_nonce`, and the detail names that highest earlier nonce. Nonces are never sorted.

Each test drops hand-signed submissions (tests/drop_tools.py) one after another, so their arrival order is the order
written (ingest numbers new names by inode change time, then by name; the names also sort in that order), and runs
ingest alone (engine.stages.ingest.ingest), not a whole epoch.
"""

from __future__ import annotations

import json

from ledger.db import open_ledger
from ledger.money import UNITS_PER_TOKEN
from protocol.canonical import WEIGHTS_TASK
from tests.drop_tools import (
    csv_bytes, drop_submission, honest, key_of, parquet_bytes, pub, read_ledger, run_ingest, signed,
)
from engine import actions


def _dataset(market, sk, name: str, nonce: int, lo: int, **kw) -> None:
    data = parquet_bytes(honest(lo, lo + 40))
    drop_submission(market.home.paths.drop, name, data, signed(sk, data, name, nonce=nonce, **kw))


def _request(market, sk, name: str, nonce: int, doc: dict) -> None:
    data = json.dumps(doc, sort_keys=True).encode()
    drop_submission(market.home.paths.drop, name, data,
                    signed(sk, data, name, nonce=nonce, kind="request", task=WEIGHTS_TASK))


def _decided(market, name: str) -> tuple[str, str | None, str | None]:
    """(status, reason, quarantine detail) of the one decision about `name`."""
    ledger = read_ledger(market.home)
    row = ledger.contribution(name)
    detail = ledger.quarantined(name)["detail"] if row["status"] == "quarantined" else None
    return row["status"], row["reason"], detail


def _requests(market, account: str) -> list[str]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return [r[0] for r in con.execute(
            "SELECT r.action FROM requests r JOIN accounts a USING (account_id) WHERE a.name = ? ORDER BY r.arrival",
            [account]).fetchall()]


def _liquid_staked(market, account: str) -> tuple[int, int]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return con.execute("SELECT b.liquid, b.staked FROM balances b JOIN accounts a USING (account_id) "
                           "WHERE a.name = ?", [account]).fetchone()


def test_nonces_are_checked_in_arrival_order_across_kinds_within_one_run(market) -> None:
    """The tester's three findings, interleaved in one run: 19 after 20, a stake 30 after a transfer 31 (replayed,
    never applied, not refused for funds), and details that name the highest nonce an earlier arrival used."""
    home = market.home
    actions.grant(home, "alice", "10")
    alice = key_of(home, "alice")
    bob = pub(key_of(home, "bob"))
    _dataset(market, alice, "a01-data20.parquet", 20, 300)
    _dataset(market, alice, "a02-data19.parquet", 19, 340)            # lower than the dataset just before it
    _request(market, alice, "a03-transfer31.json", 31,
             {"action": "transfer", "amount_units": 8 * UNITS_PER_TOKEN, "to": bob})
    _request(market, alice, "a04-stake30.json", 30,                   # lower than the transfer before it
             {"action": "stake", "amount_units": 5 * UNITS_PER_TOKEN})
    _dataset(market, alice, "a05-data25.parquet", 25, 380)            # below the request's 31: kinds share one sequence
    _dataset(market, alice, "a06-unknown-task50.parquet", 50, 420, task="no_such_task")  # rejected, but verified
    _dataset(market, alice, "a07-data45.parquet", 45, 460)            # below the rejected submission's 50
    _dataset(market, alice, "a08-data51.parquet", 51, 500)

    summary = run_ingest(home)

    assert _decided(market, "a01-data20.parquet")[:2] == ("accepted", None)
    status, reason, detail = _decided(market, "a02-data19.parquet")
    assert (status, reason) == ("quarantined", "replayed_nonce")
    assert "nonce 19 is not above 20" in detail, detail
    assert _decided(market, "a03-transfer31.json")[:2] == ("accepted", None)
    status, reason, detail = _decided(market, "a04-stake30.json")
    assert (status, reason) == ("quarantined", "replayed_nonce"), "a stake with a replayed nonce reached the books"
    assert "nonce 30 is not above 31" in detail, detail
    status, reason, detail = _decided(market, "a05-data25.parquet")
    assert (status, reason) == ("quarantined", "replayed_nonce")
    assert "nonce 25 is not above 31" in detail, detail
    assert _decided(market, "a06-unknown-task50.parquet")[1] == "unknown_task"
    status, reason, detail = _decided(market, "a07-data45.parquet")
    assert (status, reason) == ("quarantined", "replayed_nonce")
    assert "nonce 45 is not above 50" in detail, detail
    assert _decided(market, "a08-data51.parquet")[:2] == ("accepted", None)
    assert summary.reasons == {"replayed_nonce": 4, "unknown_task": 1}
    # Only the transfer moved tokens: the replayed stake was never applied (nor refused for funds).
    assert _requests(market, "alice") == ["transfer"]
    assert _liquid_staked(market, "alice") == (2 * UNITS_PER_TOKEN, 0)


def test_nonces_of_earlier_runs_count_for_every_kind(market) -> None:
    """Across runs the same rule: the highest nonce of any verified submission already recorded (accepted or not,
    any kind) bounds the next run's, and the detail names it."""
    home = market.home
    actions.grant(home, "alice", "10")
    alice = key_of(home, "alice")
    _dataset(market, alice, "r1-data20.parquet", 20, 300)
    _request(market, alice, "r1-stake31.json", 31, {"action": "stake", "amount_units": 1 * UNITS_PER_TOKEN})
    data = csv_bytes(honest(340, 380))
    drop_submission(home.paths.drop, "r1-bad-digest40.csv", data,
                    signed(alice, data, "r1-bad-digest40.csv", nonce=40, digest="0" * 64))  # verified, rejected
    first = run_ingest(home)
    assert first.reasons == {"digest_mismatch": 1} and first.accepted == 2

    _dataset(market, alice, "r2-data19.parquet", 19, 380)
    _request(market, alice, "r2-stake30.json", 30, {"action": "stake", "amount_units": 1 * UNITS_PER_TOKEN})
    _dataset(market, alice, "r2-data39.parquet", 39, 420)
    _dataset(market, alice, "r2-data41.parquet", 41, 460)
    _request(market, alice, "r2-stake40.json", 40, {"action": "stake", "amount_units": 1 * UNITS_PER_TOKEN})
    second = run_ingest(home)

    for name, n, high in (("r2-data19.parquet", 19, 40), ("r2-stake30.json", 30, 40), ("r2-data39.parquet", 39, 40),
                          ("r2-stake40.json", 40, 41)):
        status, reason, detail = _decided(market, name)
        assert (status, reason) == ("quarantined", "replayed_nonce"), name
        assert f"nonce {n} is not above {high}" in detail, detail
    assert _decided(market, "r2-data41.parquet")[:2] == ("accepted", None)
    assert second.reasons == {"replayed_nonce": 4} and second.accepted == 1
    assert _requests(market, "alice") == ["stake"]
    assert _liquid_staked(market, "alice") == (9 * UNITS_PER_TOKEN, 1 * UNITS_PER_TOKEN)
