"""The CLI as users run it: a real process per command, clear errors without tracebacks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TASK, digits_table

CLI = [sys.executable, "-m", "tributary.cli"]
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "yuma-vectors"


def run(*args: str, home: Path | None = None, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, COLUMNS="200", **(env or {}))
    cmd = [*CLI, *(["--home", str(home)] if home else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.process
def test_help_lists_every_command_with_its_help():
    top = run("--help").stdout
    for name in ("keygen", "register", "validate", "submit", "stake", "sql", "audit", "ui", "demo", "task", "epoch",
                 "consensus", "commit", "reveal", "export", "grant"):
        assert name in top
    assert "init" in run("task", "--help").stdout
    assert "run" in run("epoch", "--help").stdout and "--close" in run("epoch", "run", "--help").stdout
    assert "replay" in run("consensus", "--help").stdout
    for cmd in ("keygen", "register", "validate", "submit", "stake", "sql", "audit", "ui", "demo"):
        assert "--home" in run(cmd, "--help").stdout


@pytest.mark.process
def test_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path):
    out = run("keygen", "alice", home=tmp_path / "h").stdout.strip()
    assert len(out) == 64 and int(out, 16) >= 0
    mode = stat.S_IMODE((tmp_path / "h" / "keys" / "alice.key").stat().st_mode)
    assert mode == 0o600
    again = run("keygen", "alice", home=tmp_path / "h", check=False)
    assert again.returncode == 1 and "never overwritten" in again.stderr


@pytest.mark.process
def test_home_comes_from_the_environment(tmp_path):
    run("keygen", "zed", env={"TRIBUTARY_HOME": str(tmp_path / "envhome")})
    assert (tmp_path / "envhome" / "keys" / "zed.key").exists()
    assert (tmp_path / "envhome" / "ledger.duckdb").exists()


@pytest.mark.process
def test_task_init_validate_and_submit(market, tmp_path):
    home = market.home.root
    good = market.write("good.parquet", digits_table(400, 450))
    ok = run("validate", str(good), "--task", TASK, home=home)
    assert "passes all" in ok.stdout
    bad_table = digits_table(450, 500)
    px = bad_table.column("px_2").to_numpy().copy()
    px[3] = 1000.0
    bad = market.write("bad.parquet", bad_table.set_column(2, "px_2", [px]))
    fail = run("validate", str(bad), "--task", TASK, home=home, check=False)
    assert fail.returncode == 1 and "px_2" in fail.stderr and "outside" in fail.stderr
    missing = market.write("missing.parquet", digits_table(450, 500).drop_columns(["px_5"]))
    schema = run("validate", str(missing), "--task", TASK, home=home, check=False)
    assert schema.returncode == 1 and "px_5" in schema.stderr and "missing column" in schema.stderr

    sub = run("submit", str(good), "--key", "alice", "--task", TASK, home=home).stdout
    assert "nonce 1" in sub
    drop = sorted(p.name for p in (home / "drop").iterdir())
    assert drop == ["good.parquet", "good.parquet.manifest.json"]
    manifest = json.loads((home / "drop" / "good.parquet.manifest.json").read_text())
    assert {"version", "kind", "task", "payload", "size", "digest", "nonce", "created_at", "public_key",
            "signature"} <= set(manifest)

    epoch = run("epoch", "run", home=home).stdout
    assert "accepted 1 submissions" in epoch
    closed = run("epoch", "run", "--close", home=home).stdout
    assert "epoch 1 settled" in closed
    rewards = json.loads(run("sql", "--format", "json", "SELECT * FROM rewards WHERE epoch = 1", home=home).stdout)
    assert {r["role"] for r in rewards} == {"owner", "contributor", "validator"}


@pytest.mark.process
def test_user_errors_are_one_clear_line(market):
    home = market.home.root
    r = run("register", "alice", "--role", "wizard", home=home, check=False)
    assert r.returncode == 1 and "role must be one of" in r.stderr
    r = run("stake", "alice", "5", "--key", "bob", home=home, check=False)
    assert r.returncode == 1 and "only your own account" in r.stderr
    r = run("submit", "/no/such/file.parquet", "--key", "alice", "--task", TASK, home=home, check=False)
    assert r.returncode == 1 and "no such file" in r.stderr
    r = run("submit", str(market.write("x.parquet", digits_table(0, 20))), "--key", "nobody", "--task", TASK,
            home=home, check=False)
    assert r.returncode == 1 and "tributary keygen nobody" in r.stderr
    r = run("sql", "SELECT * FROM no_such_table", home=home, check=False)
    assert r.returncode == 1 and "no_such_table" in r.stderr
    r = run("consensus", "replay", "/no/such/vectors.json", check=False)
    assert r.returncode == 1 and "/no/such/vectors.json" in r.stderr
    r = run("grant", "val", "12.5 tokens", home=home, check=False)  # ledger.money's declared ValueError
    assert r.returncode == 1 and "12.5 tokens" in r.stderr


@pytest.mark.process
def test_user_errors_print_no_traceback(market):
    home = market.home.root
    for args in (("register", "alice", "--role", "wizard"), ("submit", "/no/such.parquet", "--key", "alice",
                                                             "--task", TASK), ("grant", "val", "x")):
        r = run(*args, home=home, check=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.process
@pytest.mark.parametrize("name", ["case01_yuma3.json", "case11_yuma3_liquid.json", "random_32x64_seed1_yuma2.json"])
def test_consensus_replay_reproduces_the_vectors(name):
    doc = json.loads((VECTORS / name).read_text())
    out = json.loads(run("consensus", "replay", str(VECTORS / name)).stdout)
    assert len(out["epochs"]) == len(doc["epochs"])
    for want, got in zip(doc["epochs"], out["epochs"]):
        assert "expected" not in got
        for key, value in want["expected"].items():
            np.testing.assert_allclose(got["outputs"][key], value, atol=1e-6, rtol=0)  # the vectors' stated tolerance


@pytest.mark.process
def test_register_public_key_registers_a_key_whose_secret_stays_elsewhere(market):
    home = market.home.root
    import nacl.signing

    public = nacl.signing.SigningKey.generate().verify_key.encode().hex()
    r = run("register", "remote", "--role", "contributor", "--public-key", public.upper(), home=home)
    assert "registered remote as contributor" in r.stdout
    assert not (home / "keys" / "remote.key").exists()
    out = json.loads(run("sql", "--format", "json", "SELECT public_key FROM accounts WHERE name = 'remote'",
                         home=home).stdout)
    assert out == [{"public_key": public}]  # stored lowercase
    for bad, says in (("ab" * 31, "64 hex characters"), ("xy" * 32, "64 hex characters"),
                      ("00" * 32, "not a valid Ed25519 public key")):
        r = run("register", "typo", "--role", "contributor", "--public-key", bad, home=home, check=False)
        assert r.returncode == 1 and "--public-key" in r.stderr and says in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    # keys/alice.key exists and holds another key: refused rather than silently preferring one of the two
    r = run("register", "alice", "--role", "contributor", "--public-key", public, home=home, check=False)
    assert r.returncode == 1 and "alice.key holds another public key" in r.stderr, r.stderr
