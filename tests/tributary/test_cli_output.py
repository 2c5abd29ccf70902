"""What the CLI writes when its output is not a terminal: CSV with `\\n` line ends, tables with every column whole."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest
from rich.table import Table

from tributary.console import CliConsole

CLI = [sys.executable, "-m", "tributary.cli"]
EXPLAIN_COLUMNS = ("epoch", "account_id", "name", "role", "submissions", "accepted_rows", "duplicate_rows",
                   "judged_rows", "unoriginal_rows", "unoriginal_submissions", "quarantined", "value",
                   "originality_cost", "house_weight", "consensus", "incentive", "dividends", "stake", "amount")


def piped(*args: str, home) -> subprocess.CompletedProcess:
    """`tributary --home HOME ARGS` with stdout a pipe and no COLUMNS hint, as in `tributary demo | less`."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return done


@pytest.mark.process
def test_sql_csv_ends_lines_with_newline_only(market) -> None:
    out = piped("sql", "SELECT name, role FROM accounts ORDER BY name", "--format", "csv", home=market.home.root).stdout
    assert b"\r" not in out
    assert out.endswith(b"\n") and out.split(b"\n")[0] == b"name,role"
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[0] == ["name", "role"] and ["alice", "contributor"] in rows


@pytest.mark.process
def test_piped_tables_keep_every_column_and_cell_whole(market) -> None:
    home = market.home.root
    header = piped("sql", "SELECT * FROM explain", home=home).stdout.decode()
    assert "…" not in header, header
    for name in EXPLAIN_COLUMNS:
        assert f" {name} " in header, f"column {name} cut or wrapped:\n{header}"
    cells = piped("sql", "SELECT account_id, public_key, name, role FROM accounts ORDER BY name", home=home).stdout
    text = cells.decode()
    assert "…" not in text, text
    from ledger.db import open_ledger

    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        keys = [k for (k,) in con.execute("SELECT public_key FROM accounts WHERE public_key IS NOT NULL").fetchall()]
    assert keys and all(k in text for k in keys), text


def test_a_console_that_is_not_a_terminal_prints_tables_whole_and_the_rest_as_usual() -> None:
    out = io.StringIO()
    console = CliConsole(file=out, width=80)
    assert not console.is_terminal
    grid = Table(*(f"column_number_{i}" for i in range(12)))
    grid.add_row(*("x" * 30 for _ in range(12)))
    console.print(grid)
    console.rule("after")
    lines = out.getvalue().splitlines()
    assert all(f"column_number_{i}" in lines[1] for i in range(12)) and "x" * 30 in lines[3]
    assert len(lines[-1]) == 80  # a rule still spans the console's width, not the table's room
    assert console.width == 80
