"""The views users query (ledger/views.py) agree with the tables they summarize, on a real settled epoch."""

from __future__ import annotations

from ledger.db import open_ledger
from tests.conftest import digits_table
from tributary.epoch import run_epoch


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
