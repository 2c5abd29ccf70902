"""End to end: `tributary demo` through the real CLI in a temporary home, then the ledger read back with SQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "tributary.cli"]


def tributary(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True, env=env, check=check,
                          timeout=600)


def sql(home: Path, query: str) -> list[dict]:
    return json.loads(tributary(home, "sql", "--format", "json", query).stdout)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "home"
    run = tributary(home, "demo")
    assert "leaderboard" in run.stdout and "quarantined submissions" in run.stdout, run.stdout + run.stderr
    return home


def earned(home: Path) -> dict[str, int]:
    rows = sql(home, "SELECT a.name, COALESCE(SUM(r.amount), 0) AS units FROM accounts a "
                     "LEFT JOIN rewards r USING (account_id) GROUP BY a.name")
    return {r["name"]: int(r["units"]) for r in rows}


def test_honest_contributors_earn_more_than_the_label_flipper(demo_home):
    paid = earned(demo_home)
    honest = [paid[f"honest-{i}"] for i in range(1, 6)]
    assert min(honest) > paid["flipper"], paid
    assert all(h > 0 for h in honest)


def test_the_copy_earns_nothing_and_is_reported_as_duplicate(demo_home):
    rows = sql(demo_home, "SELECT c.status, c.rows, c.duplicate_rows, c.value FROM contributions c "
                          "JOIN accounts a USING (account_id) WHERE a.name = 'copycat'")
    assert len(rows) == 1
    assert rows[0]["status"] == "duplicate" and rows[0]["duplicate_rows"] == rows[0]["rows"] > 0
    assert rows[0]["value"] == 0.0
    assert earned(demo_home)["copycat"] == 0


def test_the_broken_file_is_quarantined_naming_column_and_rule(demo_home):
    rows = sql(demo_home, "SELECT q.reason, q.detail, q.file FROM quarantine q JOIN accounts a USING (account_id) "
                          "WHERE a.name = 'broken'")
    assert len(rows) == 1
    assert rows[0]["reason"] == "quality_failed"
    assert "column 'px_10'" in rows[0]["detail"] and "outside" in rows[0]["detail"], rows[0]["detail"]
    assert (demo_home / "quarantine" / "epoch=1" / rows[0]["file"]).exists()  # kept, not deleted


def test_every_epoch_pays_exactly_its_emission_and_the_audit_passes(demo_home):
    rows = sql(demo_home, "SELECT e.epoch, e.emission, (SELECT SUM(amount) FROM rewards r WHERE r.epoch = e.epoch) AS paid "
                          "FROM epochs e WHERE e.settled_at IS NOT NULL AND e.epoch > 0 ORDER BY e.epoch")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(int(r["paid"]) == int(r["emission"]) > 0 for r in rows)
    audit = tributary(demo_home, "audit")
    assert "ledger OK" in audit.stdout


def test_validators_earn_dividends_and_the_lazy_one_less_per_stake(demo_home):
    rows = {r["name"]: r for r in sql(demo_home, "SELECT a.name, r.amount, r.stake, r.validator_trust FROM rewards r "
                                                 "JOIN accounts a USING (account_id) WHERE r.epoch = 2 AND r.role = 'validator'")}
    assert set(rows) == {"house", "val-honest", "val-lazy"}
    per_stake = {n: int(r["amount"]) / int(r["stake"]) for n, r in rows.items()}
    assert per_stake["val-honest"] > per_stake["val-lazy"] > 0
    assert rows["val-lazy"]["validator_trust"] < rows["val-honest"]["validator_trust"]


def test_sql_formats(demo_home):
    csv_out = tributary(demo_home, "sql", "--format", "csv", "SELECT epoch, account_id FROM rewards WHERE epoch = 1").stdout
    assert csv_out.splitlines()[0] == "epoch,account_id" and len(csv_out.splitlines()) > 2
    table = tributary(demo_home, "sql", "SELECT * FROM rewards WHERE epoch = 1").stdout
    assert "incentive" in table and "dividends" in table


def test_audit_exits_nonzero_naming_what_broke(demo_home, tmp_path):
    tampered = tmp_path / "tampered"
    import shutil

    shutil.copytree(demo_home, tampered)
    con = duckdb.connect(str(tampered / "ledger.duckdb"))
    con.execute("UPDATE transfers SET amount = amount + 7 WHERE id = (SELECT min(id) FROM transfers WHERE kind = 'incentive')")
    con.close()
    result = tributary(tampered, "audit", check=False)
    assert result.returncode == 1
    assert "epoch 1" in result.stderr and "payout transfers sum to" in result.stderr, result.stderr


def test_rerunning_the_demo_replaces_only_a_demo_home(tmp_path):
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "ledger.duckdb").write_text("someone's market")
    result = tributary(other, "demo", check=False)
    assert result.returncode == 1 and "did not make" in result.stderr
    assert "Traceback" not in result.stderr
    assert (other / "ledger.duckdb").read_text() == "someone's market"
