"""The views users query (ledger/views.py) agree with the tables they summarize, on a real settled epoch."""

from __future__ import annotations

import pytest

from ledger.db import open_ledger
from tests.conftest import digits_table
from engine.epoch import run_epoch


@pytest.mark.slow
def test_explain_leaderboard_and_stakes_agree_with_the_books(market) -> None:
    market.submit("alice", digits_table(300, 400), "a.parquet")
    market.submit("bob", digits_table(300, 400), "b.parquet")  # a copy of alice's rows: duplicates, earns 0
    market.submit("carol", digits_table(400, 460, flip=True), "c.parquet")
    epoch = run_epoch(market.home, close=True).ingest.epoch
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        q = lambda sql, p=(): con.execute(sql, list(p)).fetchall()  # noqa: E731
        (alice,) = q("SELECT submissions, accepted_rows, duplicate_rows, amount, value FROM explain "
                     "WHERE name = 'alice' AND epoch = ?", [epoch])
        assert alice[:3] == (1, 100, 0) and alice[3] > 0
        assert alice[3] == q("SELECT amount FROM rewards r JOIN accounts a USING (account_id) WHERE a.name = 'alice' "
                             "AND epoch = ?", [epoch])[0][0]
        (bob,) = q("SELECT accepted_rows, duplicate_rows, amount FROM explain WHERE name = 'bob' AND epoch = ?", [epoch])
        assert bob == (0, 100, 0)
        board = q("SELECT rank, name, amount FROM leaderboard WHERE epoch = ? ORDER BY rank, name", [epoch])
        amounts = [a for _, _, a in board]
        assert amounts == sorted(amounts, reverse=True) and board[0][0] == 1
        assert sum(amounts) == q("SELECT emission FROM epochs WHERE epoch = ?", [epoch])[0][0]
        (row,) = q("SELECT to_contributors + to_validators + to_owner, emission, burned FROM emission_by_epoch "
                   "WHERE epoch = ?", [epoch])
        assert row[0] == row[1] and row[2] == 0
        shares = q("SELECT name, staked, share_of_stake FROM stakes ORDER BY name")
        assert abs(sum(s for _, _, s in shares) - 1.0) < 1e-12  # tolerance: float division of integers
        kept = dict(q("SELECT account_id, staked FROM balance_totals WHERE staked > 0"))
        assert {n: st for n, st, _ in shares} == {n: kept[a] for a, n in q("SELECT account_id, name FROM accounts")
                                                    if a in kept}


def jittered_copy(table, seed: int = 1, sd: float = 0.3):
    """Rows made from `table` by a little noise on every pixel (within the task's 0..16 bounds): no row within the
    near-duplicate tolerance, but every row closer to what the market held than fresh draws lie."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table({n: t if n == "label" else np.clip(t.to_numpy() + rng.normal(0, sd, len(t)), 0, 16)
                     for n, t in zip(table.column_names, table.columns)})


def copier_epoch(market, *, close: bool = True):
    """Epoch 1: alice's 200 rows. Epoch 2: bob's jittered copies of them (zeroed as unoriginal by the gate) and
    carol's 100 fresh rows (2 of them exact copies of alice's)."""
    market.submit("alice", digits_table(300, 500), "a.parquet")
    run_epoch(market.home, close=True)
    market.submit("bob", jittered_copy(digits_table(300, 500)), "b.parquet")
    market.submit("carol", digits_table(500, 600), "c.parquet")
    return run_epoch(market.home, close=close)


@pytest.mark.slow
def test_originality_explain_and_epoch_value_say_what_an_epoch_paid_for(market) -> None:
    epoch = copier_epoch(market).ingest.epoch
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        q = lambda sql, p=(): con.execute(sql, list(p)).fetchall()  # noqa: E731
        rows = {r[0]: r[1:] for r in q(
            "SELECT name, task, rows, judged_rows, unoriginal_rows, gate_rows, originality_p, median_p, status, value, "
            "value_without_originality, originality_cost FROM originality WHERE epoch = ?", [epoch])}
        assert set(rows) == {"bob", "carol"}
        task, n, judged, unoriginal, gate, p, median, status, value, without, cost = rows["bob"]
        assert (task, n, status, value) == ("digits", 200, "unoriginal", 0.0)
        assert 0 < judged <= n and gate <= judged and p < 1e-6 and 0 <= median <= 1
        assert without > 0 and cost == without  # the gate took everything the copies would have earned
        assert rows["carol"][7] == "accepted" and rows["carol"][8] > 0 and rows["carol"][5] >= 1e-6
        # epoch 1's rows were judged too (alice's, against an empty lake): the view holds every measured submission
        assert q("SELECT name, status FROM originality WHERE epoch = 1") == [("alice", "accepted")]

        bob = q("SELECT submissions, accepted_rows, judged_rows, unoriginal_rows, unoriginal_submissions, value, "
                "originality_cost, amount FROM explain WHERE name = 'bob' AND epoch = ?", [epoch])[0]
        assert bob[:2] == (1, 0) and bob[2] == judged and bob[3] == unoriginal and bob[4] == 1
        assert bob[5] == 0.0 and bob[6] == cost and bob[7] == 0
        carol = q("SELECT unoriginal_submissions, amount FROM explain WHERE name = 'carol' AND epoch = ?", [epoch])[0]
        assert carol[0] == 0 and carol[1] > 0

        ((lake, new, admitted, test, base, gain, after, subs, dups, value, paid_cost),) = q(
            "SELECT lake_rows, new_rows, admitted_rows, test_rows, lake_utility, gain, utility_after, submissions, "
            "duplicate_rows, value, originality_cost FROM epoch_value WHERE epoch = ? AND task = 'digits'", [epoch])
        assert (lake, new, test, subs) == (200, 300, 300, 2)
        assert admitted == 100 - dups - rows["carol"][3]  # bob's rows are all out of the game; carol's fresh ones in
        assert after == base + gain and abs(value - gain) < 1e-12 and gain > 0
        assert q("SELECT count(*) FROM epoch_values")[0][0] == 2  # epoch 1 added alice's rows to an empty lake
        assert q("SELECT count(*) FROM leaderboard WHERE epoch = ? AND name = 'bob'", [epoch])[0][0] == 1


def test_explain_accepted_rows_counts_data_rows_not_requests_or_weights(market) -> None:
    """A request lands as one row and a weight vector as one row per key, but neither is data: explain's
    accepted_rows is the accepted datasets' and predictions' rows (less duplicates) only."""
    from ledger.contributions import ContributionRecord, record
    from ledger.db import transaction

    def rec(n: int, kind: str, rows: int, status: str = "accepted") -> ContributionRecord:
        return ContributionRecord(submission_id=f"s{n}", epoch=1, account_id=alice, public_key=key, task="digits",
                                  kind=kind, rows=rows, status=status,
                                  reason="quality_failed" if status == "quarantined" else None, digest="0" * 64, nonce=n,
                                  file=f"f{n}", received_at="2026-01-01T00:00:00+00:00", arrival=n, verified=True)

    with open_ledger(market.home.paths.ledger) as con, transaction(con):
        alice, key = con.execute("SELECT account_id, public_key FROM accounts WHERE name = 'alice'").fetchone()
        record(con, [rec(1, "dataset", 40), rec(2, "dataset", 20), rec(3, "request", 1), rec(4, "request", 1),
                     rec(5, "predictions", 7), rec(6, "weights", 3), rec(7, "dataset", 9, "quarantined")])
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        row = con.execute("SELECT submissions, accepted_rows, quarantined FROM explain WHERE name = 'alice' "
                          "AND epoch = 1").fetchone()
    assert row == (7, 40 + 20 + 7, 1)
