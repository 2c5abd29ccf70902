"""The DuckDB ledger: money rounding, transfers, settlement idempotency and conflicts, the audit chain."""

from __future__ import annotations

from datetime import datetime

import duckdb
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import accounts, transfers
from ledger.audit import audit
from ledger.db import open_ledger, transaction
from ledger.epochs import current_epoch, open_epoch
from ledger.errors import DuplicateRewardLine, EpochOrderError, InsufficientFunds, SettlementConflict
from ledger.money import largest_remainder, tokens_to_units, units_to_tokens
from ledger.queries import export, run_sql
from ledger.settlement import RewardLine, Settlement, settle_epoch

NOW = datetime(2026, 11, 25, 12, 0, 0)
KEY_A = "aa" * 32
KEY_B = "bb" * 32
KEY_V = "cc" * 32


def test_largest_remainder_sums_exactly_and_is_deterministic():
    shares = [1 / 3, 1 / 3, 1 / 3]
    assert largest_remainder(shares, 10) == [4, 3, 3]  # tie on remainders: lower index first
    assert sum(largest_remainder([0.1] * 7 + [0.3], 1_000_000_007)) == 1_000_000_007
    assert largest_remainder([0.0, 0.0], 0) == [0, 0]
    with pytest.raises(ValueError):
        largest_remainder([0.0, 0.0], 5)
    with pytest.raises(ValueError):
        largest_remainder([-0.1, 1.1], 5)


def _largest_remainder_by_fractions(shares: list[float], total: int) -> list[int]:
    """The definition, spelled out with Fractions: the oracle the integer implementation must equal exactly."""
    from fractions import Fraction

    fracs = [Fraction(s) for s in shares]
    quotas = [f * total / sum(fracs) for f in fracs]
    amounts = [int(q) for q in quotas]
    for i in sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - amounts[i]), i))[:total - sum(amounts)]:
        amounts[i] += 1
    return amounts


@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_subnormal=True), min_size=1, max_size=40)
       .filter(lambda xs: sum(xs) > 0), st.integers(min_value=0, max_value=10**21))
def test_largest_remainder_equals_the_fraction_definition(shares: list[float], total: int) -> None:
    assert largest_remainder(shares, total) == _largest_remainder_by_fractions(shares, total)


_SHARES = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_subnormal=True),
    st.sampled_from([0.0, 0.1, 0.2, 1 / 3, 0.5, 1.0, 5e-324, 1e-300, 1e300]),  # ties, and shares far apart
)


@given(st.lists(_SHARES, min_size=1, max_size=60).filter(lambda xs: sum(xs) > 0),
       st.one_of(st.integers(min_value=0, max_value=2**62 - 1), st.sampled_from([1, 7, 10**15, 2**62 - 1])))
def test_the_vectorized_split_equals_the_exact_one(shares: list[float], total: int) -> None:
    from unittest import mock

    from ledger import money

    exact = money._split_exact(shares, total)
    # As it runs (float64 first), and with float64 always giving way to long double.
    for limit in (money.FAST_SPLIT_DOUBT_LIMIT, -1):
        with mock.patch.object(money, "FAST_SPLIT_DOUBT_LIMIT", limit):
            fast = money._split_vectorized(shares, total)
        assert fast is None or fast.tolist() == exact
        if all(x < 1e300 for x in shares):
            assert fast is not None  # on this machine's long double, ordinary shares take the vectorized path


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_large_split_is_the_exact_split(seed: int) -> None:
    from ledger.money import FAST_SPLIT_MIN_SHARES, _split_exact, largest_remainder_array

    rng = np.random.default_rng(seed)
    shares = np.concatenate([rng.random(30_000), rng.pareto(1.5, 20_000), np.full(5_000, 0.25), np.zeros(100)])
    shares = rng.permutation(shares).tolist()
    assert len(shares) >= FAST_SPLIT_MIN_SHARES
    for total in (10**15, 1_000_003, len(shares) // 3, 2**62 - 1):
        exact = _split_exact(shares, total)
        assert largest_remainder(shares, total) == exact
        assert largest_remainder_array(np.array(shares), total).tolist() == exact


def test_token_conversion_is_exact():
    assert tokens_to_units("12.5") == 12_500_000_000
    assert units_to_tokens(12_500_000_000) == "12.5"
    assert units_to_tokens(1) == "0.000000001"
    with pytest.raises(ValueError):
        tokens_to_units("0.0000000001")


@pytest.fixture()
def con(tmp_path):
    with open_ledger(tmp_path / "ledger.duckdb") as c:
        with transaction(c):
            accounts.ensure_system_accounts(c)
            open_epoch(c, 1, NOW)
            accounts.register(c, KEY_A, "alice", "contributor", 1)
            accounts.register(c, KEY_B, "bob", "contributor", 1)
            v = accounts.register(c, KEY_V, "val", "validator", 1)
            transfers.grant(c, v.account_id, 100, 1)
        yield c


def _settlement(epoch: int, digest: str, emission: int = 1000) -> Settlement:
    a, b, v = (accounts.account_id_for(k) for k in (KEY_A, KEY_B, KEY_V))
    return Settlement(
        epoch=epoch, inputs_digest=digest, emission=emission,
        lines=(
            RewardLine("owner", "owner", 0.18, "owner_cut"),
            RewardLine(a, "contributor", 0.41 * 2 / 3, "incentive", value=2.0),
            RewardLine(b, "contributor", 0.41 / 3, "incentive", value=1.0),
            RewardLine(v, "validator", 0.41, "dividend", bucket="staked", dividends=1.0),
        ),
        bonds=((v, a, 0.5),),
    )


def test_settle_pays_exactly_the_emission_and_chains(con):
    out = settle_epoch(con, _settlement(1, "d1"), now=NOW)
    assert out.settled and sum(out.amounts.values()) == 1000
    assert current_epoch(con) == 2
    (paid,) = con.execute("SELECT SUM(amount) FROM transfers WHERE epoch = 1 AND kind <> 'grant'").fetchone()
    assert paid == 1000
    staked = con.execute("SELECT staked FROM balances WHERE account_id = ?", [accounts.account_id_for(KEY_V)]).fetchone()[0]
    assert staked == out.amounts[accounts.account_id_for(KEY_V)]
    report = audit(con)
    assert report.ok, report.problems
    assert report.epochs_checked == 1


def test_resettling_same_inputs_is_a_noop_and_other_inputs_conflict(con):
    first = settle_epoch(con, _settlement(1, "d1"), now=NOW)
    (n,) = con.execute("SELECT count(*) FROM transfers").fetchone()
    again = settle_epoch(con, _settlement(1, "d1"), now=NOW)
    assert not again.settled and again.hash == first.hash and again.amounts == first.amounts
    assert con.execute("SELECT count(*) FROM transfers").fetchone()[0] == n
    with pytest.raises(SettlementConflict) as e:
        settle_epoch(con, _settlement(1, "other"), now=NOW)
    assert "d1" in str(e.value) and "other" in str(e.value)


def test_reward_lines_as_one_arrow_table_settle_exactly_as_tuples(con, tmp_path):
    from ledger.settlement import reward_lines

    tuples = settle_epoch(con, _settlement(1, "d1"), now=NOW)
    with open_ledger(tmp_path / "columns.duckdb") as other:
        with transaction(other):
            accounts.ensure_system_accounts(other)
            open_epoch(other, 1, NOW)
            for key, name, role in ((KEY_A, "alice", "contributor"), (KEY_B, "bob", "contributor"),
                                    (KEY_V, "val", "validator")):
                accounts.register(other, key, name, role, 1)
            transfers.grant(other, accounts.account_id_for(KEY_V), 100, 1)
        s = _settlement(1, "d1")
        columns = settle_epoch(other, Settlement(s.epoch, s.inputs_digest, s.emission, reward_lines(s.lines),
                                                 bonds=s.bonds), now=NOW)
        assert audit(other).ok, audit(other).problems
    assert (columns.hash, columns.amounts) == (tuples.hash, tuples.amounts)


def test_epochs_settle_in_order(con):
    with pytest.raises(EpochOrderError):
        settle_epoch(con, _settlement(2, "d2"), now=NOW)


def test_failed_settlement_writes_nothing(con):
    dup = Settlement(epoch=1, inputs_digest="x", emission=10,
                     lines=(RewardLine("owner", "owner", 0.5, "owner_cut"), RewardLine("owner", "owner", 0.5, "owner_cut")))
    with pytest.raises(DuplicateRewardLine, match="epoch 1: the reward lines name account owner more than once"):
        settle_epoch(con, dup, now=NOW)
    assert con.execute("SELECT count(*) FROM rewards").fetchone()[0] == 0
    assert current_epoch(con) == 1


def test_stake_needs_liquid_funds(con):
    v = accounts.account_id_for(KEY_V)
    transfers.stake(con, v, 60, 1)
    with pytest.raises(InsufficientFunds):
        transfers.stake(con, v, 41, 1)
    assert transfers.balance(con, v, "liquid") == 40 and transfers.balance(con, v, "staked") == 60
    assert transfers.stakes_at_epoch_start(con, 1) == {}  # stake counts from the next epoch
    assert transfers.stakes_at_epoch_start(con, 2) == {v: 60}


def test_audit_names_tampering(con):
    settle_epoch(con, _settlement(1, "d1"), now=NOW)
    con.execute("UPDATE transfers SET amount = amount + 1 WHERE id = (SELECT min(id) FROM transfers WHERE kind = 'incentive')")
    report = audit(con)
    assert not report.ok
    text = "\n".join(report.problems)
    assert "epoch 1" in text and "digest" in text
    assert "payout transfers sum to 1001" in text


def test_audit_finds_negative_balance_and_deleted_transfer(con):
    transfers.stake(con, accounts.account_id_for(KEY_V), 60, 1)
    settle_epoch(con, _settlement(1, "d1"), now=NOW)
    con.execute("DELETE FROM transfers WHERE id = 1")  # the validator's grant
    text = "\n".join(audit(con).problems)
    assert "transfers were deleted" in text
    assert f"account {accounts.account_id_for(KEY_V)}: negative balance" in text


def test_settlement_digests_its_rows_exactly_as_the_audit_reads_them_back(con):
    """Settlement hashes the rows it wrote from memory; the audit from the ledger. Lines out of account order, a
    transfer earlier in the epoch, a release after the payouts and an unpaid line all take the in-memory path."""
    from ledger.results import RESULTS_VERSION, results_digest

    v = accounts.account_id_for(KEY_V)
    transfers.stake(con, v, 60, 1)
    transfers.unstake(con, v, 20, 1)
    base = _settlement(1, "d1", emission=999)
    lines = tuple(reversed(base.lines)) + (RewardLine("burn", "owner", 0.0, "owner_cut"),)
    out = settle_epoch(con, Settlement(epoch=1, inputs_digest="d1", emission=999, lines=lines, bonds=base.bonds,
                                       releases=((v, 20),)), now=NOW)
    (stored,) = con.execute("SELECT results_digest FROM epochs WHERE epoch = 1").fetchone()
    assert stored == results_digest(con, 1, RESULTS_VERSION)
    assert out.paid.num_rows == 5 and out.amounts["burn"] == 0
    kinds = [k for (k,) in con.execute("SELECT kind FROM transfers WHERE epoch = 1 ORDER BY id").fetchall()]
    assert kinds[:3] == ["grant", "stake", "unstake"] and kinds[-1] == "release" and len(kinds) == 8
    report = audit(con)
    assert report.ok, report.problems


def test_audit_names_a_copied_rewards_row(con):
    settle_epoch(con, _settlement(1, "d1"), now=NOW)
    con.execute("INSERT INTO rewards SELECT * FROM rewards WHERE epoch = 1 AND account_id = 'owner'")
    problems = audit(con).problems
    assert "epoch 1: account owner has 2 rewards rows; an account has one per epoch (a row was copied into the " \
           "ledger)" in problems


def test_sql_is_read_only_and_export_round_trips(con, tmp_path):
    settle_epoch(con, _settlement(1, "d1"), now=NOW)
    path = tmp_path / "ledger.duckdb"
    con.close()
    result = run_sql(path, "SELECT account_id, amount FROM rewards WHERE epoch = 1 ORDER BY account_id")
    assert result.columns == ["account_id", "amount"] and sum(r[1] for r in result.rows) == 1000
    with pytest.raises(duckdb.Error):
        run_sql(path, "DELETE FROM transfers")
    files = export(path, tmp_path / "out")
    assert (tmp_path / "out" / "rewards.parquet") in files
    out = duckdb.connect(str(tmp_path / "out" / "ledger.duckdb"), read_only=True)
    assert out.execute("SELECT SUM(amount) FROM rewards").fetchone()[0] == 1000
