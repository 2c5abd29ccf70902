"""Commands import only what they use: `submit` and `keygen` never load DuckDB, pyarrow, Beam, GX, Dagster or sklearn.

Each command runs in a fresh interpreter (as `tributary` does); at exit it writes the top-level packages it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import actions
from engine.home import open_home

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("apache_beam", "great_expectations", "dagster", "sklearn", "duckdb", "pyarrow", "polars", "pandas", "numpy")
NEVER = ("apache_beam", "great_expectations", "dagster", "sklearn")  # for any command that does not run them

PROBE = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["MODULES_OUT"], "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
from tributary.entry import main  # what the `tributary` script runs
sys.argv = ["tributary", *sys.argv[1:]]
main()
"""


def loaded(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `tributary ARGS` in a fresh interpreter; its result and the heavy packages it imported."""
    out = tmp_path / "modules.json"
    out.unlink(missing_ok=True)
    env = dict(os.environ, MODULES_OUT=str(out))
    env.pop("TRIBUTARY_HOME", None)
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    return done, set(json.loads(out.read_text())) & set(HEAVY)


@pytest.fixture()
def home(tmp_path):
    h = open_home(tmp_path / "home")
    actions.keygen(h, "alice")
    return h


@pytest.mark.process
def test_submit_loads_no_ledger_no_arrow_no_pipeline(home, tmp_path):
    payload = tmp_path / "shard.parquet"
    payload.write_bytes(b"PAR1 not really parquet: submit signs bytes and never decodes them PAR1")
    done, heavy = loaded(tmp_path, "--home", str(home.root), "submit", str(payload), "--key", "alice", "--task", "digits")
    assert done.returncode == 0, done.stderr
    assert (home.paths.drop / "shard.parquet.manifest.json").is_file()
    assert heavy == set(), f"submit imported {sorted(heavy)}"


@pytest.mark.process
def test_keygen_in_an_existing_home_loads_no_ledger(home, tmp_path):
    done, heavy = loaded(tmp_path, "--home", str(home.root), "keygen", "bob")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 64 and (home.paths.keys / "bob.key").is_file()
    assert heavy == set(), f"keygen imported {sorted(heavy)}"


@pytest.mark.process
def test_sql_loads_duckdb_and_nothing_of_the_pipeline(home, tmp_path):
    done, heavy = loaded(tmp_path, "--home", str(home.root), "sql", "--format", "json", "SELECT count(*) AS n FROM accounts")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["n"] >= 1
    assert "duckdb" in heavy and not heavy & set(NEVER), f"sql imported {sorted(heavy)}"


@pytest.mark.process
def test_submit_never_creates_a_home(tmp_path):
    payload = tmp_path / "shard.parquet"
    payload.write_bytes(b"data")
    missing = tmp_path / "no-such-home"
    done, heavy = loaded(tmp_path, "--home", str(missing), "submit", str(payload), "--key", "alice", "--task", "digits")
    assert done.returncode == 1
    message = " ".join(done.stderr.split())  # rich wraps long lines
    assert "is not a market home" in message and "Traceback" not in message
    assert not missing.exists()
    assert "duckdb" not in heavy


FULL_PROBE = PROBE.replace('{m.split(".")[0] for m in sys.modules}', "set(sys.modules)")  # every module's name
# What an epoch run on an empty drop/ has no use for (issue 20): the later stages, the valuation, Yuma, settling.
NOT_FOR_AN_EMPTY_EPOCH = ("engine.stages.consensus", "engine.stages.settle", "engine.stages.lake_state",
                          "rewards.marginal", "rewards.model_scores", "rewards.yuma_chain", "ledger.settlement",
                          "quality.holdout", "apache_beam", "great_expectations", "dagster", "sklearn",
                          "typer", "pydantic")  # the `tributary` script's plain `epoch run` skips the typer CLI


@pytest.mark.process
def test_epoch_run_on_an_empty_drop_imports_only_ingest_and_scoring(home, tmp_path):
    out = tmp_path / "modules.json"
    env = dict(os.environ, MODULES_OUT=str(out))
    env.pop("TRIBUTARY_HOME", None)
    done = subprocess.run([sys.executable, "-c", FULL_PROBE, "--home", str(home.root), "epoch", "run"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "accepted 0 submissions" in done.stdout
    modules = set(json.loads(out.read_text()))
    assert {"engine.stages.ingest", "engine.stages.scoring"} <= modules
    assert not {m for m in modules if m in NOT_FOR_AN_EMPTY_EPOCH or m.split(".")[0] in NOT_FOR_AN_EMPTY_EPOCH}
