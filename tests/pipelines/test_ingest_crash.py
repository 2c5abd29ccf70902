"""Record first, move after: a SIGKILL anywhere in ingest, then a rerun, ends exactly as an uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.audit import audit
from ledger.db import open_ledger
from tests.conftest import digits_table
from tests.processes import finish_or_kill
from engine.failpoints import FAILPOINT_ENV
from engine.home import open_home

ROOT = Path(__file__).resolve().parents[2]
INGEST = "import sys; from engine.home import open_home; from engine.stages.ingest import ingest; ingest(open_home(sys.argv[1]))"
POINTS = ("ingest.sighted", "ingest.decided", "ingest.recorded", "ingest.moved_one", "ingest.moved")


def _run(home: Path, env: dict | None = None, kill_after: float | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(home)], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return finish_or_kill(proc, kill_after, timeout=300)[0]


def _state(home: Path) -> dict:
    """What must match an uninterrupted run: decisions, quarantine rows, lake files, where every file went."""
    with open_ledger(home / "ledger.duckdb", read_only=True) as con:
        decisions = sorted(con.execute(
            "SELECT file, status, reason, account_id, rows, verified, regexp_replace(submission_id, '[0-9]+$', 'N') "
            "FROM contributions").fetchall())
        quarantine = sorted(con.execute("SELECT file, reason, account_id FROM quarantine").fetchall())
        assert audit(con).ok
    tree = lambda d: sorted(str(p.relative_to(home)) for p in (home / d).rglob("*") if p.is_file())  # noqa: E731
    return {"decisions": decisions, "quarantine": quarantine, "lake": tree("lake"), "archive": tree("archive"),
            "quarantined_files": tree("quarantine"), "drop": tree("drop"), "staging": tree("staging")}


@pytest.fixture()
def loaded(market, tmp_path) -> Path:
    """A home with a mixed drop: honest files, a reject for quality, an unreadable manifest, a symlink."""
    market.submit("alice", digits_table(300, 360), "a.parquet")
    market.submit("bob", digits_table(360, 420), "b.csv.parquet")
    market.submit("carol", digits_table(420, 425), "short.parquet")
    (market.home.paths.drop / "junk.parquet.manifest.json").write_text("{not json")
    os.symlink(tmp_path / "secret", market.home.paths.drop / "link.parquet")
    return market.home.root


@pytest.mark.slow
def test_killed_ingest_then_rerun_equals_an_uninterrupted_run(loaded: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(loaded, reference, symlinks=True)
    assert _run(reference) == 0
    expected = _state(reference)
    assert len(expected["decisions"]) == 5 and expected["drop"] == []

    for i, point in enumerate(POINTS):
        home = tmp_path / f"at-{i}"
        shutil.copytree(loaded, home, symlinks=True)
        assert _run(home, {FAILPOINT_ENV: point}) == -signal.SIGKILL, point
        assert _run(home) == 0
        assert _state(home) == expected, point


@pytest.mark.slow
def test_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(loaded: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(loaded, reference, symlinks=True)
    started = time.monotonic()
    _run(reference)
    took = time.monotonic() - started
    expected = _state(reference)
    for seed in (1, 2, 3):
        home = tmp_path / f"killed-{seed}"
        shutil.copytree(loaded, home, symlinks=True)
        _run(home, kill_after=random.Random(seed).uniform(0.2, took))
        assert _run(home) == 0
        assert _state(home) == expected, seed
