"""Opening the ledger for writing costs nothing it need not (issue 20): views are made only when missing or changed,
and a writer that changed nothing leaves the readers' snapshot as it is. The snapshot still follows every commit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ledger import accounts, transfers
from ledger.db import connect, open_ledger, snapshot_path, transaction
from ledger.schema import migrate
from ledger.views import VIEWS, view_comment
from engine.home import open_home


def _views(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, str | None]]:
    return {name: (oid, comment) for name, oid, comment in con.execute(
        "SELECT view_name, view_oid, comment FROM duckdb_views() WHERE NOT internal").fetchall()}


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_views_are_made_once_and_remade_when_their_sql_changes(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    con = connect(path)
    try:
        made = _views(con)
        assert {name: made[name][1] for name in VIEWS} == {name: view_comment(name, sql) for name, sql in VIEWS.items()}
        migrate(con)
        assert _views(con) == made, "an unchanged view is left alone"
        # A view as an older version made it (other SQL, no comment): replaced by the next migrate.
        con.execute("CREATE OR REPLACE VIEW stakes AS SELECT 1 AS x")
        migrate(con)
        again = _views(con)
        assert again["stakes"][1] == view_comment("stakes", VIEWS["stakes"])
        assert [d[0] for d in con.execute("SELECT * FROM stakes").description][:2] == ["account_id", "name"]
        assert {n: v for n, v in again.items() if n != "stakes"} == {n: v for n, v in made.items() if n != "stakes"}
        # A ledger from before the comments: every view of ours is made again, with its comment.
        for name, sql in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
        assert all(comment is None for n, (_, comment) in _views(con).items() if n in VIEWS)
        migrate(con)
        assert {n: c for n, (_, c) in _views(con).items() if n in VIEWS} == {
            n: view_comment(n, sql) for n, sql in VIEWS.items()}
    finally:
        con.close()


def test_a_writer_that_changed_nothing_leaves_the_snapshot(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    ledger, snapshot = home.paths.ledger, snapshot_path(home.paths.ledger)
    time.sleep(0.05)  # past the file system's timestamp tick: the snapshot must be newer than the ledger
    with open_ledger(ledger) as con:  # refreshes once more if the snapshot was written in the ledger's tick
        con.execute("SELECT count(*) FROM epochs").fetchall()
    before = _stat(snapshot)
    with open_ledger(ledger) as con:
        con.execute("SELECT count(*) FROM epochs").fetchall()
    with open_ledger(ledger) as con, transaction(con):
        con.execute("SELECT count(*) FROM accounts").fetchall()
    assert _stat(snapshot) == before, "nothing changed: the snapshot is not copied again"
    with open_ledger(ledger) as con, transaction(con):
        house = accounts.find(con, home.settings.house_name)
        transfers.grant(con, house.account_id, 5, 1, "a grant")
    assert _stat(snapshot) != before
    with open_ledger(snapshot, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM transfers WHERE memo = 'a grant'").fetchone()[0] == 1


def test_a_change_the_snapshot_missed_is_copied_by_the_next_writer(tmp_path: Path) -> None:
    # A writer that did not refresh the snapshot (a plain DuckDB connection, or one killed before refreshing):
    # the next writer copies it even if it changes nothing itself. The second change leaves the file's size as it
    # was, so only the file's headers and times can tell.
    home = open_home(tmp_path / "home")
    ledger, snapshot = home.paths.ledger, snapshot_path(home.paths.ledger)
    for value in ("first", "second"):
        time.sleep(0.05)  # past the file system's timestamp tick
        raw = duckdb.connect(str(ledger))
        raw.execute("INSERT OR REPLACE INTO market VALUES ('a fact', ?)", [value])
        raw.close()
        with open_ledger(ledger) as con:
            con.execute("SELECT 1").fetchall()
        with open_ledger(snapshot, read_only=True) as con:
            assert con.execute("SELECT value FROM market WHERE key = 'a fact'").fetchall() == [(value,)]


KILLED_WRITER = """
import os, sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("INSERT OR REPLACE INTO market VALUES ('a fact', ?)", [sys.argv[2]])
os._exit(0)  # committed, never checkpointed: the change is in ledger.duckdb.wal
"""


@pytest.mark.process
def test_a_commit_left_in_the_write_ahead_log_reaches_the_snapshot(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    ledger, snapshot = home.paths.ledger, snapshot_path(home.paths.ledger)
    for value in ("first", "second"):
        time.sleep(0.05)
        subprocess.run([sys.executable, "-c", KILLED_WRITER, str(ledger), value], check=True, timeout=60)
        assert Path(f"{ledger}.wal").exists()
        with open_ledger(ledger) as con:
            con.execute("SELECT 1").fetchall()
        with open_ledger(snapshot, read_only=True) as con:
            assert con.execute("SELECT value FROM market WHERE key = 'a fact'").fetchall() == [(value,)]
