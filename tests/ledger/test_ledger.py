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


# ---------------------------------------------------------------------------------------------------- originality
def _contribution(epoch: int, n: int, key: str, task: str = "digits", kind: str = "dataset"):
    from ledger.contributions import ContributionRecord

    return ContributionRecord(submission_id=f"s{epoch}-{n}", epoch=epoch, account_id=accounts.account_id_for(key),
                              public_key=key, task=task, kind=kind, rows=10, status="accepted", reason=None,
                              digest=f"d{n}", nonce=n, file=f"f{n}.parquet", received_at="2026-11-25T12:00:00",
                              lake_path=f"lake/{n}.parquet", arrival=n, verified=True)


def test_settlement_writes_originality_figures_and_what_the_epoch_added_and_a_resettle_is_a_no_op(con):
    from ledger.contributions import record
    from ledger.epoch_values import EpochValue, read_epoch_values
    from ledger.results import RESULTS_VERSION
    from ledger.settlement import ContributionUpdate

    record(con, [_contribution(1, 1, KEY_A), _contribution(1, 2, KEY_B), _contribution(1, 3, KEY_A, kind="predictions")])
    updates = (
        ContributionUpdate("s1-1", "accepted", 1, 0.75, judged_rows=8, unoriginal_rows=1, gate_rows=2,
                           originality_p=0.4, median_p=0.5, value_without_originality=0.5),
        ContributionUpdate("s1-2", "unoriginal", 0, 0.0, judged_rows=9, unoriginal_rows=3, gate_rows=9,
                           originality_p=1e-9, median_p=0.01, value_without_originality=0.25),
        ContributionUpdate("s1-3", "accepted", 0, 0.6),  # predictions: scored, never judged
    )
    added = (EpochValue("digits", 40, 20, 6, 300, 0.3125, 0.75),)
    s = _settlement(1, "d1")
    settled = Settlement(s.epoch, s.inputs_digest, s.emission, s.lines, bonds=s.bonds, contributions=updates,
                         epoch_values=added)
    first = settle_epoch(con, settled, now=NOW)
    columns = ("submission_id, status, duplicate_rows, value, judged_rows, unoriginal_rows, gate_rows, originality_p, "
               "median_p, value_without_originality")
    rows = con.execute(f"SELECT {columns} FROM contributions ORDER BY submission_id").fetchall()
    assert rows == [("s1-1", "accepted", 1, 0.75, 8, 1, 2, 0.4, 0.5, 0.5),
                    ("s1-2", "unoriginal", 0, 0.0, 9, 3, 9, 1e-9, 0.01, 0.25),
                    ("s1-3", "accepted", 0, 0.6, None, None, None, None, None, None)]
    assert read_epoch_values(con, 1) == added
    assert con.execute("SELECT results_version FROM epochs WHERE epoch = 1").fetchone()[0] == RESULTS_VERSION == 4
    report = audit(con)
    assert report.ok, report.problems
    # The same settlement again writes nothing; other inputs conflict.
    before = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("contributions", "epoch_values")}
    again = settle_epoch(con, settled, now=NOW)
    assert not again.settled and again.hash == first.hash
    assert {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in before} == before
    with pytest.raises(SettlementConflict):
        settle_epoch(con, Settlement(1, "other", s.emission, s.lines, contributions=updates, epoch_values=added),
                     now=NOW)
    # Each new figure is in the results digest, and the audit checks an epoch paid for what it added.
    for tamper, says in (("UPDATE contributions SET judged_rows = 7 WHERE submission_id = 's1-1'", "digest"),
                         ("UPDATE epoch_values SET gain = 0.5", "task digits: its rows added 0.5 to the lake"),
                         ("UPDATE contributions SET value = 0.1 WHERE submission_id = 's1-2'",
                          "contribution s1-2 is unoriginal (zeroed by the originality gate) but was valued at 0.1")):
        con.execute("BEGIN TRANSACTION")
        con.execute(tamper)
        problems = "\n".join(audit(con).problems)
        con.execute("ROLLBACK")
        assert "epoch 1: its rows now digest to" in problems and says in problems, (tamper, problems)


def test_an_old_ledger_migrates_keeping_its_contributions_and_accepts_unoriginal_after(tmp_path):
    """A ledger at schema 9 (its contributions CHECK without 'unoriginal', a view reading the table, an epoch
    settled in results version 3) migrates to 10: every row and column kept, the new columns NULL, the epoch still
    audits as settled, and 'unoriginal' is a status from then on."""
    from ledger.digest import GENESIS_HASH, chain_hash
    from ledger.results import results_digest
    from ledger.schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.duckdb"
    old = duckdb.connect(str(path))
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, ddl in enumerate(MIGRATIONS[:9], start=1):
        old.execute(ddl)
        old.execute("INSERT INTO schema_version VALUES (?)", [version])
    old.execute("CREATE VIEW explain AS SELECT epoch, account_id, count(*) AS submissions, sum(value) AS value "
                "FROM contributions GROUP BY ALL")  # the views of schema 9 read contributions
    old.execute("INSERT INTO accounts VALUES ('emission', NULL, 'emission', 'system', 0, 0, false), "
                "('a', 'ka', 'alice', 'contributor', 1, 0, false)")
    old.execute("INSERT INTO epochs (epoch, starts_at, state) VALUES (1, TIMESTAMP '2026-11-25 12:00:00', 'scored'), "
                "(2, TIMESTAMP '2026-11-25 13:00:00', 'open')")
    old.execute(
        "INSERT INTO contributions (submission_id, epoch, account_id, task, kind, rows, status, reason, digest, "
        "public_key, nonce, file, received_at, lake_path, duplicate_rows, value, arrival, verified, suspicious, "
        "duplicate_of) VALUES "
        "('s1', 1, 'a', 'digits', 'dataset', 10, 'accepted', NULL, 'd1', 'ka', 1, 'f1', TIMESTAMP '2026-11-25 12:01:00', "
        " 'lake/1', 0, 0.5, 1, true, NULL, NULL), "
        "('s2', 1, 'a', 'digits', 'dataset', 10, 'duplicate', NULL, 'd2', 'ka', 2, 'f2', TIMESTAMP '2026-11-25 12:02:00', "
        " 'lake/2', 10, 0.0, 2, true, 'px_0', ['s1']), "
        "('s3', 1, 'a', 'digits', 'dataset', 3, 'quarantined', 'too_few_rows', 'd3', 'ka', 3, 'f3', "
        " TIMESTAMP '2026-11-25 12:03:00', NULL, NULL, NULL, 3, false, NULL, NULL)")
    digest = results_digest(old, 1, 3)
    link = chain_hash(GENESIS_HASH, 1, "in1", digest)
    old.execute("UPDATE epochs SET settled_at = TIMESTAMP '2026-11-25 13:00:00', inputs_digest = 'in1', "
                "results_digest = ?, prev_hash = ?, hash = ?, emission = 0, state = 'settled', results_version = 3 "
                "WHERE epoch = 1", [digest, GENESIS_HASH, link])
    kept = old.execute("SELECT * FROM contributions ORDER BY submission_id").fetchall()
    with pytest.raises(duckdb.ConstraintException):
        old.execute("UPDATE contributions SET status = 'unoriginal' WHERE submission_id = 's1'")
    old.close()

    with open_ledger(path) as c:  # a read-write open migrates
        assert c.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 11
        columns = [d[0] for d in c.execute("SELECT * FROM contributions").description]
        assert columns[:len(kept[0])] == ["submission_id", "epoch", "account_id", "task", "kind", "rows", "status",
                                          "reason", "digest", "public_key", "nonce", "file", "received_at",
                                          "lake_path", "duplicate_rows", "value", "arrival", "verified", "suspicious",
                                          "duplicate_of"]
        assert c.execute(f"SELECT {', '.join(columns[:len(kept[0])])} FROM contributions ORDER BY submission_id"
                         ).fetchall() == kept
        assert c.execute("SELECT count(*) FROM contributions WHERE judged_rows IS NOT NULL OR unoriginal_rows IS NOT "
                         "NULL OR gate_rows IS NOT NULL OR originality_p IS NOT NULL OR median_p IS NOT NULL OR "
                         "value_without_originality IS NOT NULL").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM epoch_values").fetchone()[0] == 0
        report = audit(c)
        assert report.ok and report.epochs_checked == 1, report.problems  # epoch 1 recomputes in version 3
        assert c.execute("SELECT submissions, value FROM explain WHERE account_id = 'a' AND epoch = 1").fetchone() \
            == (3, 0.5)
        assert c.execute("SELECT count(*) FROM originality").fetchone()[0] == 0  # not measured before the rules
        c.execute("UPDATE contributions SET status = 'unoriginal' WHERE submission_id = 's1'")
        with pytest.raises(duckdb.ConstraintException):
            c.execute("UPDATE contributions SET status = 'copied' WHERE submission_id = 's1'")
        with pytest.raises(duckdb.ConstraintException):  # still one row per submission id
            c.execute("INSERT INTO contributions (submission_id, epoch, status) VALUES ('s1', 2, 'accepted')")
