"""`task show`, `task publish` and `validate --task-card` as users run them: a contributor's machine has no home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TASK, digits_table

CLI = [sys.executable, "-m", "tributary.cli"]


def run(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.process
def test_publish_then_validate_from_the_card_alone(market, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRIBUTARY_HOME"}
    env["COLUMNS"] = "200"
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    home = str(market.home.root)

    # operator: show and publish
    shown = run("--home", home, "task", "show", TASK, "--format", "json", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    card = json.loads(shown.stdout)
    assert card["card_version"] == 1 and card["name"] == TASK and card["open"] is True
    assert "profile" not in card and "holdout" not in card
    table_view = run("--home", home, "task", "show", TASK, cwd=tmp_path, env=env)
    assert table_view.returncode == 0 and "px_0" in table_view.stdout and "open" in table_view.stdout
    pub = tmp_path / "pub"
    published = run("--home", home, "task", "publish", str(pub), cwd=tmp_path, env=env)
    assert published.returncode == 0, published.stderr
    assert json.loads((pub / f"{TASK}.json").read_text()) == card

    # contributor: a bare folder, no TRIBUTARY_HOME, no data/
    machine = tmp_path / "contributor"
    machine.mkdir()
    good, bad = machine / "good.parquet", machine / "bad.csv"
    pq.write_table(digits_table(0, 40), good)
    rows = digits_table(40, 80)
    px = rows.column("px_3").to_pylist()
    px[7] = 99.0
    rows = rows.set_column(3, "px_3", pa.array(px, pa.float64()))
    import pyarrow.csv as pcsv

    pcsv.write_csv(rows, bad)
    card_path = str(pub / f"{TASK}.json")
    ok = run("validate", "good.parquet", "--task-card", card_path, cwd=machine, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "passes all" in ok.stdout and "not published" in ok.stdout
    no = run("validate", "bad.csv", "--task-card", card_path, cwd=machine, env=env)
    assert no.returncode == 1, no.stdout + no.stderr
    lines = [line for line in no.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, no.stderr
    assert "quality_failed" in lines[0] and "px_3" in lines[0] and "declared bounds [0.0, 16.0]" in lines[0]
    as_json = run("validate", "bad.csv", "--task-card", card_path, "--format", "json", cwd=machine, env=env)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["success"] is False

    # exactly one of --task and --task-card
    both = run("validate", "good.parquet", "--task", TASK, "--task-card", card_path, cwd=machine, env=env)
    neither = run("validate", "good.parquet", cwd=machine, env=env)
    assert both.returncode == neither.returncode == 2 and "exactly one" in both.stderr + neither.stderr

    assert sorted(p.name for p in machine.iterdir()) == ["bad.csv", "good.parquet"]  # no home (data/) was created
    assert not (tmp_path / "data").exists()
