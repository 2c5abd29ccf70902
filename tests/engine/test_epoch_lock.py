"""One writer per epoch: `epoch run --close` killed anywhere and rerun, or started twice at once, ends as if run
once, uninterrupted, one after the other; a writer that cannot get the lock names who holds it."""

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
from ledger.db import open_ledger, transaction
from ledger.epochs import advance, current_epoch
from tests.conftest import digits_table
from tests.processes import finish_or_kill
from engine.failpoints import FAILPOINT_ENV
from engine.home import open_home
from engine.lock import EpochBusy, epoch_lock, lock_holder

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tributary.cli"]
POINTS = ("ingest.recorded", "epoch.scored", "epoch.settled")


def _close(home: Path, env: dict | None = None, epoch: int | None = None) -> subprocess.Popen:
    named = ["--epoch", str(epoch)] if epoch is not None else []
    return subprocess.Popen([*CLI, "--home", str(home), "epoch", "run", "--close", *named], cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, kill_after: float | None = None) -> int:
    code, text = finish_or_kill(proc, kill_after)
    assert "Traceback" not in text, text[-2000:]
    return code


def _state(home: Path) -> dict:
    """What must match: each submission recorded once with its outcome, the amounts paid, the epochs settled."""
    with open_ledger(home / "ledger.duckdb", read_only=True) as con:
        report = audit(con)
        assert report.ok, report.problems
        return {
            "contributions": sorted(con.execute(
                "SELECT file, epoch, status, reason, account_id, rows, duplicate_rows, value FROM contributions"
            ).fetchall()),
            "rewards": sorted(con.execute("SELECT epoch, account_id, amount, stake FROM rewards").fetchall()),
            "payouts": sorted(con.execute(
                "SELECT epoch, credit_account, credit_bucket, amount, kind FROM transfers").fetchall()),
            "epochs": con.execute("SELECT epoch, state, emission FROM epochs ORDER BY epoch").fetchall(),
            "drop": sorted(p.name for p in (home / "drop").iterdir()),
        }


@pytest.fixture()
def loaded(market) -> Path:
    market.submit("alice", digits_table(300, 360), "a.parquet")
    market.submit("bob", digits_table(360, 420), "b.parquet")
    market.submit("carol", digits_table(420, 425), "short.parquet")  # quarantined: too few rows
    return market.home.root


@pytest.mark.slow
def test_killed_close_then_rerun_equals_an_uninterrupted_run(loaded: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(loaded, reference)
    started = time.monotonic()
    assert _finish(_close(reference)) == 0
    took = time.monotonic() - started
    expected = _state(reference)
    assert [e[1] for e in expected["epochs"]] == ["settled", "settled", "open"]
    assert len(expected["contributions"]) == 3 and expected["drop"] == []

    for i, point in enumerate(POINTS):
        home = tmp_path / f"at-{i}"
        shutil.copytree(loaded, home)
        assert _finish(_close(home, {FAILPOINT_ENV: point}, epoch=1)) == -signal.SIGKILL, point
        # The rerun names the epoch: settled already (killed after the commit), it does nothing.
        assert _finish(_close(home, epoch=1)) == 0
        assert _state(home) == expected, point
    for seed in (1, 2):  # and at a moment no failpoint names
        home = tmp_path / f"killed-{seed}"
        shutil.copytree(loaded, home)
        _finish(_close(home, epoch=1), kill_after=random.Random(seed).uniform(0.5, took))
        assert _finish(_close(home, epoch=1)) == 0
        assert _state(home) == expected, seed


@pytest.mark.slow
def test_two_closes_at_once_equal_two_in_a_row(loaded: Path, tmp_path: Path) -> None:
    sequential = tmp_path / "sequential"
    shutil.copytree(loaded, sequential)
    assert _finish(_close(sequential)) == 0
    assert _finish(_close(sequential)) == 0
    expected = _state(sequential)

    concurrent = tmp_path / "concurrent"
    shutil.copytree(loaded, concurrent)
    first, second = _close(concurrent), _close(concurrent)
    assert _finish(first) == 0 and _finish(second) == 0
    assert _state(concurrent) == expected


HOLD_LOCK = """
import sys, time
from engine.home import open_home
from engine.lock import epoch_lock
with epoch_lock(open_home(sys.argv[1]), "a test holding the lock"):
    print("holding", flush=True)
    time.sleep(60)
"""


@pytest.mark.process
def test_a_held_lock_makes_a_writer_wait_then_name_the_holder(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "settings.toml").write_text("lock_wait_seconds = 1.0\n")
    home = open_home(root)
    assert lock_holder(root) is None
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert "a test holding the lock" in (lock_holder(root) or "")
        started = time.monotonic()
        with pytest.raises(EpochBusy, match=f"pid {holder.pid} \\(a test holding the lock\\)"):
            with epoch_lock(home, "a second writer"):
                pass
        assert time.monotonic() - started >= 1.0
        r = subprocess.run([*CLI, "--home", str(root), "epoch", "run"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 1 and "epoch lock is held by" in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    with epoch_lock(home, "after"):  # free again once the holder is gone (the kernel drops a dead process's lock)
        assert "this process" in lock_holder(root)


def test_nothing_lands_in_a_pinned_epoch(market) -> None:
    """A close pins the epoch (state scored): an ingest after that decides nothing into it."""
    from engine.stages.ingest import ingest

    market.submit("alice", digits_table(300, 360), "a.parquet")
    with open_ledger(market.home.paths.ledger) as con, transaction(con):
        epoch = current_epoch(con)
        advance(con, epoch, "scored")
    summary = ingest(market.home)
    assert summary.accepted == 0 and summary.waiting == 1
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM contributions WHERE epoch = ?", [epoch]).fetchone()[0] == 0
