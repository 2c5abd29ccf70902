"""The ledger at scale: settling one epoch that pays 1M accounts, and users' views after 1,000 epochs.

    .venv/bin/python benchmarks/ledger_scale.py [--accounts 1000000] [--epochs 1000] [--view-accounts 10000]
        [--repeats 3] [--quick]

1. Settle: `ledger.settlement.settle_epoch` writing one epoch that pays `--accounts` contributors (reward rows,
   payout transfers, kept balances, the results digest and the chain link, in one transaction), against a bare DuckDB
   INSERT of the same transfer rows from Arrow into a table of the same schema, side by side in this run, each the
   best of `--repeats` runs taken in turn (target: ratio <= 3).
2. Views: `balances` for one account and `leaderboard` for one epoch on a ledger holding `--epochs` settled epochs
   of `--view-accounts` accounts each, against the same query on a ledger holding one such epoch (target: each
   ratio <= 2). The big ledger's rows are written in bulk (they are the shape settlement writes); each query is the
   best of 5.
Scratch ledgers live under .bench/ and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger import accounts  # noqa: E402
from ledger.db import transaction  # noqa: E402
from ledger.schema import migrate  # noqa: E402
from ledger.epochs import open_epoch  # noqa: E402
from ledger.settlement import LINE_SCHEMA, Settlement, settle_epoch  # noqa: E402

# pyarrow imports pandas the first time it converts Python objects (~1.5 s): a cost of the process, paid before the
# timed settlement as the baseline's table is built before its timed insert.
pa.array([0.0])

WORK = ROOT / ".bench" / "ledger_scale"
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc).replace(tzinfo=None)
EMISSION_UNITS = 1_000_000 * 10**9


def fresh_ledger(path: Path):
    """A migrated ledger with epoch 0 settled and epoch 1 open, as a new home has."""
    import duckdb

    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    migrate(con)
    with transaction(con):
        accounts.ensure_system_accounts(con)
        open_epoch(con, 0, NOW)
    settle_epoch(con, Settlement(epoch=0, inputs_digest="0" * 64, emission=0), now=NOW)
    return con


def payout_settlement(n: int, epoch: int = 1) -> Settlement:
    rng = np.random.default_rng(0)
    shares = rng.random(n)
    shares /= shares.sum()
    # The reward lines as Arrow columns (LINE_SCHEMA), as a caller settling at this scale passes them.
    lines = pa.table({
        "account_id": pa.array([f"acct{i:010d}" for i in range(n)]), "role": pa.array(["contributor"] * n),
        "share": shares, "kind": pa.array(["incentive"] * n), "bucket": pa.array(["liquid"] * n),
        "value": shares, "consensus": shares, "incentive": shares,
        **{name: pa.nulls(n, pa.float64()) for name in ("weight", "dividends", "validator_trust", "model_score")},
        "stake": pa.nulls(n, pa.int64()),
    }).select(LINE_SCHEMA.names).cast(LINE_SCHEMA)
    return Settlement(epoch=epoch, inputs_digest="1" * 64, emission=EMISSION_UNITS, lines=lines)


def register_accounts(con, n: int) -> None:
    """Register the n paid accounts in bulk, as `accounts.register` leaves each: its row and a zero kept balance."""
    ids = pa.table({"account_id": pa.array([f"acct{i:010d}" for i in range(n)])})
    with transaction(con):
        con.register("new_ids", ids)
        con.execute("INSERT INTO accounts (account_id, public_key, name, role, registered_epoch) "
                    "SELECT account_id, account_id, account_id, 'contributor', 1 FROM new_ids")
        con.execute("INSERT INTO balance_totals (account_id) SELECT account_id FROM new_ids")
        con.unregister("new_ids")
    con.execute("CHECKPOINT")


def bench_settle(n: int, repeats: int) -> tuple[float, float, float]:
    """(settle_epoch, bare transfer INSERT, the writes a settlement cannot skip) in seconds, each the best of
    `repeats` runs taken in turn, on fresh ledgers whose n accounts are registered (a market pays registered
    accounts; registering is not part of settling)."""
    s = payout_settlement(n)
    rows = pa.table({
        "id": pa.array(np.arange(1, n + 1, dtype=np.int64)), "epoch": pa.array(np.ones(n, dtype=np.int64)),
        "debit_account": pa.array(["emission"] * n), "debit_bucket": pa.array(["liquid"] * n),
        "credit_account": s.lines.column("account_id"), "credit_bucket": pa.array(["liquid"] * n),
        "amount": pa.array(np.full(n, 1000, dtype=np.int64)), "kind": pa.array(["incentive"] * n),
        "memo": pa.array(["epoch 1 incentive"] * n),
    })
    best = [float("inf")] * 3
    for _ in range(repeats):
        for i, run in enumerate((time_settle, time_bare_insert, bench_writes_floor)):
            best[i] = min(best[i], run(s, rows))
    return best[0], best[1], best[2]


def time_settle(s: Settlement, rows: pa.Table) -> float:
    con = fresh_ledger(WORK / "settle.duckdb")
    register_accounts(con, s.lines.num_rows)
    start = time.perf_counter()
    settle_epoch(con, s, now=NOW)
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def time_bare_insert(s: Settlement, rows: pa.Table) -> float:
    """The baseline: the same transfer rows, from a ready Arrow table, into a table of the transfers' schema."""
    import duckdb

    path = WORK / "bare.duckdb"
    path.unlink(missing_ok=True)
    bare = duckdb.connect(str(path))
    bare.execute("CREATE TABLE transfers (id BIGINT PRIMARY KEY, epoch BIGINT NOT NULL, debit_account VARCHAR NOT "
                 "NULL, debit_bucket VARCHAR NOT NULL, credit_account VARCHAR NOT NULL, credit_bucket VARCHAR NOT "
                 "NULL, amount BIGINT NOT NULL CHECK (amount > 0), kind VARCHAR NOT NULL, memo VARCHAR NOT NULL)")
    bare.register("rows", rows)
    start = time.perf_counter()
    bare.execute("BEGIN")
    bare.execute("INSERT INTO transfers SELECT * FROM rows")
    bare.execute("COMMIT")
    elapsed = time.perf_counter() - start
    bare.close()
    return elapsed


def bench_writes_floor(s: Settlement, transfers: pa.Table) -> float:
    """The three writes of a settlement alone, from ready Arrow tables into the real schema in one transaction:
    reward rows, payout transfers and the kept balances they move. No split, no digest, no Python objects: what
    any settlement of this schema costs at least."""
    from ledger.balances import apply_payouts

    n = s.lines.num_rows
    shares = s.lines.column("share")
    rewards = pa.table({
        "epoch": pa.array(np.ones(n, dtype=np.int64)), "account_id": transfers.column("credit_account"),
        "role": pa.array(["contributor"] * n), "value": shares, "weight": pa.nulls(n, pa.float64()),
        "consensus": shares, "incentive": shares, "dividends": pa.nulls(n, pa.float64()),
        "amount": transfers.column("amount"), "stake": pa.nulls(n, pa.int64()),
        "validator_trust": pa.nulls(n, pa.float64()), "model_score": pa.nulls(n, pa.float64()),
    })
    con = fresh_ledger(WORK / "floor.duckdb")
    register_accounts(con, n)
    con.register("reward_rows", rewards)
    con.register("transfer_rows", transfers)
    start = time.perf_counter()
    with transaction(con):
        con.execute("INSERT INTO rewards BY NAME SELECT * FROM reward_rows")
        con.execute("INSERT INTO transfers SELECT * FROM transfer_rows")
        con.register("moves", pa.table({"account_id": transfers.column("credit_account"),
                                        "bucket": transfers.column("credit_bucket"),
                                        "amount": transfers.column("amount")}))
        apply_payouts(con, "moves", "emission", int(pc.sum(transfers.column("amount")).as_py()))
    floor_s = time.perf_counter() - start
    con.close()
    return floor_s


def views_ledger(path: Path, epochs: int, n: int):
    """A ledger holding `epochs` settled epochs of `n` accounts each: reward rows, payout transfers, kept balances."""
    con = fresh_ledger(path)
    ids = pa.array([f"acct{i:010d}" for i in range(n)])
    with transaction(con):
        con.execute("DELETE FROM epochs WHERE epoch >= 1")  # written below, settled, with the open one after them
        con.register("ids", pa.table({"account_id": ids}))
        con.execute("INSERT INTO accounts (account_id, public_key, name, role, registered_epoch) "
                    "SELECT account_id, account_id, account_id, 'contributor', 1 FROM ids")
        for first in range(1, epochs + 1, 100):  # 100 epochs per statement: the rows sit in epoch order, as settled
            last = min(first + 99, epochs)
            con.execute(f"""
                INSERT INTO rewards (epoch, account_id, role, value, consensus, incentive, dividends, amount)
                SELECT e, account_id, 'contributor', random(), random(), random(), 0.0, CAST(1 + random() * 1e9 AS BIGINT)
                FROM range({first}, {last + 1}) t(e), ids ORDER BY e
            """)
            con.execute(f"""
                INSERT INTO transfers
                SELECT (SELECT COALESCE(max(id), 0) FROM transfers) + row_number() OVER (), e, 'emission', 'liquid',
                       account_id, 'liquid', 1000, 'incentive', 'epoch ' || e || ' incentive'
                FROM range({first}, {last + 1}) t(e), ids ORDER BY e
            """)
            con.execute(f"INSERT INTO epochs (epoch, starts_at, ends_at, settled_at, state, emission) "
                        f"SELECT e, now(), now(), now(), 'settled', 0 FROM range({first}, {last + 1}) t(e)")
        con.execute(f"INSERT INTO epochs (epoch, starts_at, state) VALUES ({epochs + 1}, now(), 'open')")
        con.execute(f"INSERT INTO balance_totals SELECT account_id, {epochs} * 1000, 0, 0 FROM ids")
    con.execute("CHECKPOINT")
    return con


def best_of(con, sql: str, params: list, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        con.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - start)
    return best


def bench_views(epochs: int, n: int) -> dict[str, tuple[float, float]]:
    queries = {
        "balances (one account)": ("SELECT * FROM balances WHERE account_id = ?", ["acct0000000042"]),
        "leaderboard (one epoch)": ("SELECT * FROM leaderboard WHERE epoch = ? ORDER BY rank LIMIT 100", [None]),
    }
    out: dict[str, list[float]] = {name: [] for name in queries}
    for label, count in (("one", 1), ("many", epochs)):
        con = views_ledger(WORK / f"views-{label}.duckdb", count, n)
        for name, (sql, params) in queries.items():
            p = [count // 2 or 1] if params == [None] else params
            out[name].append(best_of(con, sql, p))
        con.close()
    return {name: (v[1], v[0]) for name, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--epochs", type=int, default=1_000)
    ap.add_argument("--view-accounts", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3, help="settle and baseline: the best of this many runs each")
    ap.add_argument("--quick", action="store_true", help="100k accounts, 100 epochs: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.accounts, args.epochs = 100_000, 100
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        settle_s, bare_s, floor_s = bench_settle(args.accounts, args.repeats)
        print(f"settle one epoch paying {args.accounts:,} accounts: {settle_s:.2f} s; bare Arrow INSERT of the same "
              f"transfer rows: {bare_s:.2f} s; ratio {settle_s / bare_s:.1f}x (target <= 3x)")
        print(f"  of which unavoidable: the reward rows, payout transfers and kept balances written from ready Arrow "
              f"tables take {floor_s:.2f} s, {floor_s / bare_s:.1f}x the bare insert")
        for name, (many, one) in bench_views(args.epochs, args.view_accounts).items():
            print(f"{name} after {args.epochs:,} epochs x {args.view_accounts:,} accounts: {many * 1e3:.2f} ms; on one "
                  f"epoch: {one * 1e3:.2f} ms; ratio {many / one:.2f}x (target <= 2x)")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
