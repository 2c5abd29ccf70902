"""The valuation's state between epochs (state/valuation/): derived data, so it is rebuildable, checked by the audit,
and a crash between a settlement and its update ends as an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ledger.db import open_ledger
from tests.conftest import digits_table
from tests.processes import finish_or_kill
from engine.failpoints import FAILPOINT_ENV
from engine.home import open_home
from engine.stages.lake_state import STATE_DIR, audit_views

pytestmark = pytest.mark.slow  # whole epochs (Beam ingest, GX)

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tributary.cli"]


def _values(home: Path) -> list:
    with open_ledger(home / "ledger.duckdb", read_only=True) as con:
        return sorted(con.execute("SELECT file, epoch, status, rows, duplicate_rows, value FROM contributions "
                                  "WHERE kind = 'dataset'").fetchall())


def _views(home: Path) -> list[Path]:
    return sorted(p.parent for p in (home / STATE_DIR).rglob("view.json"))


def test_the_view_follows_settlements_and_a_rebuild_gives_the_same_values(market) -> None:
    from engine.epoch import run_epoch

    market.submit("alice", digits_table(300, 400), "a1.parquet")
    run_epoch(market.home, close=True)
    (view,) = _views(market.home.root)
    meta = json.loads((view / "view.json").read_text())
    assert len(meta["folded"]) == 1 and meta["given"] == 100  # refreshed right after the settlement

    market.submit("bob", digits_table(400, 480), "b2.parquet")
    market.submit("carol", digits_table(300, 340), "c2-copy.parquet")  # alice's rows again: duplicates
    kept = run_epoch(market.home).scores
    shutil.rmtree(market.home.root / STATE_DIR)  # derived data: rebuilt from the lake on next use
    rebuilt = run_epoch(market.home).scores
    assert [(s.submission_id, s.value, s.duplicate_rows) for s in kept.submissions] == \
           [(s.submission_id, s.value, s.duplicate_rows) for s in rebuilt.submissions]
    assert kept.pools == rebuilt.pools
    checked, problems = audit_views(market.home)
    assert checked == 1 and problems == []


def test_the_audit_names_a_kept_view_that_differs_from_the_lake(market) -> None:
    from rewards.lake_view import LakeView
    from engine.epoch import run_epoch

    market.submit("alice", digits_table(300, 400), "a1.parquet")
    run_epoch(market.home, close=True)
    (folder,) = _views(market.home.root)
    view = LakeView.load(folder)
    view.nearest.dist[0, 0] *= 0.5  # a tampered (or stale-format) neighbour distance
    view.save(folder)
    checked, problems = audit_views(market.home)
    assert checked == 1 and len(problems) == 1 and "nn_dist" in problems[0] and "rebuild" in problems[0]
    out = subprocess.run([*CLI, "--home", str(market.home.root), "audit"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and "nn_dist differ" in out.stderr and "Traceback" not in out.stderr
    (folder / "near" / "index.json").write_bytes(b"torn")  # a torn write: refused by load, then rebuilt by the next reader
    assert "torn" in audit_views(market.home)[1][0]
    market.submit("bob", digits_table(400, 480), "b2.parquet")
    run_epoch(market.home)
    assert audit_views(market.home) == (1, [])


def _close(home: Path, env: dict | None = None) -> int:
    proc = subprocess.Popen([*CLI, "--home", str(home), "epoch", "run", "--close"], cwd=ROOT,
                            env={**os.environ, "COLUMNS": "200", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    code, text = finish_or_kill(proc, None)
    assert "Traceback" not in text, text[-2000:]
    return code


def test_a_crash_between_settlement_and_the_state_update_ends_as_an_uninterrupted_run(market, tmp_path) -> None:
    market.submit("alice", digits_table(300, 400), "a1.parquet")
    start = tmp_path / "start"
    shutil.copytree(market.home.root, start)
    runs = {}
    for name, env in (("uninterrupted", None), ("crashed", {FAILPOINT_ENV: "epoch.settled"})):
        home = tmp_path / name
        shutil.copytree(start, home)
        code = _close(home, env)
        assert code == (-signal.SIGKILL if env else 0)
        if env:  # killed after the commit, before the view moved: the settled epoch is not in it
            assert all(len(json.loads((v / "view.json").read_text())["folded"]) == 0 for v in _views(home))
        h = open_home(home)
        for i, (key, lo) in enumerate((("bob", 400), ("carol", 480))):
            (tmp_path / f"in-{name}").mkdir(exist_ok=True)
            path = tmp_path / f"in-{name}" / f"{key}.parquet"
            pq.write_table(digits_table(lo, lo + 60), path)
            from engine import actions

            actions.submit(h, path, key=key, task="digits")
        assert _close(home) == 0
        runs[name] = (_values(home), [(v.name, sorted((f.relative_to(v).as_posix(), f.read_bytes())
                                                      for f in v.rglob("*.npy"))) for v in _views(home)])
    assert runs["crashed"] == runs["uninterrupted"]
    assert np.isfinite([v for *_, v in runs["crashed"][0] if v is not None]).all()
