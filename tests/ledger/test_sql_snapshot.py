"""`tributary sql` reads the snapshot every writer refreshes as it commits: no lock error while the pipeline writes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import accounts, transfers
from ledger.db import open_ledger, snapshot_path, transaction
from tests.tributary.test_cli import run
from engine.home import open_home

HOLD_WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # a writer holding DuckDB's exclusive file lock, as a long ingest would
con.execute("BEGIN TRANSACTION")
con.execute("UPDATE epochs SET emission = emission WHERE epoch = 0")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.process
def test_sql_answers_while_another_process_writes(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    assert snapshot_path(home.paths.ledger).exists(), "setting up the home wrote the readers' snapshot"
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(home.paths.ledger), "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        start = time.monotonic()
        r = run("sql", "SELECT count(*) AS n FROM epochs", home=home.root, check=False)
        assert r.returncode == 0, r.stderr
        assert "lock" not in r.stderr.lower()
        assert "snapshot: epochs settled through 0, epoch 1 open" in r.stderr
        assert time.monotonic() - start < 20, "sql must not wait for the writer"
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.process
def test_the_snapshot_follows_each_commit(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    with open_ledger(home.paths.ledger) as con, transaction(con):
        house = accounts.find(con, home.settings.house_name)
        transfers.grant(con, house.account_id, 5, 1, "a grant")
    r = run("sql", "SELECT count(*) AS n FROM transfers WHERE kind = 'grant'", "--format", "csv", home=home.root)
    assert r.stdout.splitlines()[1] == "2"  # the house stake's grant at genesis, and this one
