"""Read-only commands never create, migrate or write a home: a typo in --home says so and exits 1."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.tributary.test_cli import run
from engine.home import open_home


@pytest.mark.process
@pytest.mark.parametrize("args", [("sql", "SELECT 1"), ("audit",), ("export", "OUT")])
def test_a_missing_home_is_an_error_and_stays_missing(tmp_path: Path, args: tuple[str, ...]) -> None:
    typo = tmp_path / "typo"
    args = tuple(str(tmp_path / "out") if a == "OUT" else a for a in args)
    r = run(*args, home=typo, check=False)
    assert r.returncode == 1 and "is not a market home" in r.stderr, r.stderr
    assert not typo.exists() and not (tmp_path / "out").exists()


@pytest.mark.process
def test_reads_leave_the_ledger_file_as_it_was(tmp_path: Path) -> None:
    home = open_home(tmp_path / "home")
    before = hashlib.sha256(home.paths.ledger.read_bytes()).hexdigest()
    assert "2" in run("sql", "SELECT count(*) FROM epochs", home=home.root).stdout  # genesis 0, open 1
    run("audit", home=home.root)
    assert hashlib.sha256(home.paths.ledger.read_bytes()).hexdigest() == before
