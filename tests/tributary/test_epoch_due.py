"""`epoch_seconds` is read: `epoch run --close-when-due` settles the open epoch only once its window has closed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.home import open_home
from tests.tributary.test_cli import run


def _settled(home: Path) -> str:
    return run("sql", "SELECT count(*) AS n FROM epochs WHERE settled_at IS NOT NULL", "--format", "csv",
               home=home).stdout.splitlines()[1]


@pytest.mark.process
def test_close_when_due_waits_for_the_window(tmp_path: Path) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "settings.toml").write_text("epoch_seconds = 3600\n")
    open_home(root)
    r = run("epoch", "run", "--close-when-due", home=root)
    assert "not settling" in r.stdout and _settled(root) == "1"  # genesis only
    (root / "settings.toml").write_text("epoch_seconds = 1\n")  # the same epoch, now past a 1-second window
    time.sleep(1.1)
    r = run("epoch", "run", "--close-when-due", home=root)
    assert "its window has closed" in r.stdout and _settled(root) == "2"


@pytest.mark.process
def test_knn_k_is_the_k_a_new_task_starts_from(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.datasets import load_iris

    root = tmp_path / "home"
    root.mkdir()
    (root / "settings.toml").write_text("knn_k = 7\n")
    frame = load_iris(as_frame=True).frame
    holdout = tmp_path / "holdout.parquet"
    pd.DataFrame(frame).to_parquet(holdout)
    run("task", "init", "iris", "--holdout", str(holdout), "--label", "target", home=root)
    assert "k = 7" in (root / "tasks" / "iris.toml").read_text()
