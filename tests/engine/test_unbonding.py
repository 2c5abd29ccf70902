"""Unstaked tokens leave `staked` at once, sit in `unbonding`, and the settlement of epoch E + cooldown releases them."""

from __future__ import annotations

import pytest

from ledger import accounts, transfers
from ledger.audit import audit
from ledger.db import open_ledger, transaction
from ledger.epochs import current_epoch
from engine.epoch import run_epoch


def _balances(market, account_id: str) -> tuple[int, int, int]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return con.execute("SELECT liquid, staked, unbonding FROM balances WHERE account_id = ?",
                           [account_id]).fetchone()


@pytest.mark.slow
def test_unbonding_is_released_after_the_cooldown(market) -> None:
    units = 7 * 10**9
    with open_ledger(market.home.paths.ledger) as con, transaction(con):
        val = accounts.get(con, "val").account_id
        epoch = current_epoch(con)
        # What an applied unstake request writes: staked -> unbonding now, released at epoch + cooldown.
        transfers.post(con, epoch=epoch, debit=val, credit=val, amount=units, kind="unstake",
                       debit_bucket="staked", credit_bucket="unbonding")
        con.execute("INSERT INTO requests (submission_id, epoch, account_id, action, amount, release_epoch) "
                    "VALUES ('req-1', ?, ?, 'unstake', ?, ?)",
                    [epoch, val, units, epoch + market.home.settings.unstake_cooldown_epochs])
    liquid0, _, unbonding0 = _balances(market, val)
    assert unbonding0 == units
    for settled in range(market.home.settings.unstake_cooldown_epochs + 1):
        run_epoch(market.home, close=True)
        liquid, _, unbonding = _balances(market, val)
        if settled < market.home.settings.unstake_cooldown_epochs:
            assert unbonding == units and liquid == liquid0, settled  # still cooling down
    assert unbonding == 0 and liquid == liquid0 + units
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        released = con.execute("SELECT epoch, amount FROM transfers WHERE kind = 'release'").fetchall()
        assert released == [(epoch + market.home.settings.unstake_cooldown_epochs, units)]
        assert audit(con).ok, audit(con).problems
