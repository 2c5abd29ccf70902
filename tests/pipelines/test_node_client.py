"""A second client in another language: tests/clients/node_client.mjs (plain Node.js, written from docs/PROTOCOL.md
alone, with its own BLAKE2b-256) makes keys on "its own machine", the operator registers only their public keys
(`register --public-key`, as a function and through the real CLI), and ingest accepts what the Node client drops.

What the client sends: a CSV dataset and a signed `transfer` request (its account is granted tokens first) from a
contributor key; a weights commitment from a second Node key registered as a validator (a contributor may not send
weights: kind_not_allowed); and a dataset whose payload it changed by one byte after signing (digest_mismatch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from engine import actions
from engine.errors import PublicKeyError
from engine.stages.ingest import ingest
from ledger.db import open_ledger
from ledger.epochs import current_epoch
from ledger.money import tokens_to_units
from pipelines.weights import weights_commitment
from tests.conftest import TASK, digits_table

NODE = shutil.which("node")
CLIENT = Path(__file__).resolve().parents[1] / "clients" / "node_client.mjs"
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.process,  # runs node (and once the tributary CLI) in subprocesses
    pytest.mark.skipif(NODE is None, reason="node (Node.js) is not on PATH: `sh scripts/ensure-debian.sh node nodejs node` installs "
                                            "Debian's nodejs (make test runs it)"),
]

CONTRIBUTOR_SEED = "5a" * 32
VALIDATOR_SEED = "c3" * 32
CREATED_AT = "2026-11-25T12:00:00.000Z"


def node(*args: str) -> str:
    result = subprocess.run([NODE, str(CLIENT), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def ledger_rows(market, sql: str) -> list[dict]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        cur = con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def test_node_blake2b_256_matches_hashlib_at_every_block_boundary(tmp_path):
    files = []
    for n in (0, 1, 63, 127, 128, 129, 255, 256, 257, 1000, 4096 + 17):
        path = tmp_path / f"f{n}"
        path.write_bytes(bytes((i * 131 + n) % 256 for i in range(n)))
        files.append(path)
    digests = node("digest", *map(str, files)).split()
    assert digests == [hashlib.blake2b(p.read_bytes(), digest_size=32).hexdigest() for p in files]


def test_node_weights_commitment_writes_floats_as_the_market_hashes_them():
    weights = {f"{i:064x}": w for i, w in enumerate((1, 0.1, 1e-5, 1e-4, 1e15, 1e16, 1 / 3, 123456789.125, 5e-324,
                                                     2.5e-7, 1e22, 0, 12345678901234567))}
    salt = "ab" * 16
    got = node("commitment", "--epoch", "4", "--weights", json.dumps(weights), "--salt", salt)
    assert got == weights_commitment(4, weights, salt)


def test_a_node_client_on_its_own_machine_joins_and_its_submissions_land(market, tmp_path):
    home, drop = market.home, market.home.paths.drop
    client = tmp_path / "contributor-machine"
    client.mkdir()
    # 1. the contributor makes its key where it lives; only the public key leaves its machine
    contributor_pub = node("keygen", "--key", str(client / "me.key"), "--seed", CONTRIBUTOR_SEED)
    assert contributor_pub == nacl.signing.SigningKey(bytes.fromhex(CONTRIBUTOR_SEED)).verify_key.encode().hex()
    validator_pub = node("keygen", "--key", str(client / "val.key"), "--seed", VALIDATOR_SEED)

    # 2. the operator registers the public keys: once as a function, once through the real CLI (uppercase hex)
    account = actions.register(home, "node-alice", "contributor", public_key=contributor_pub.upper())
    assert account.public_key == contributor_pub and not (home.paths.keys / "node-alice.key").exists()
    cli = subprocess.run([sys.executable, "-m", "tributary.cli", "--home", str(home.root), "register", "node-val",
                          "--role", "validator", "--public-key", validator_pub.upper()],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert cli.returncode == 0, cli.stderr
    assert "registered node-val as validator" in cli.stdout
    actions.grant(home, "node-alice", "10")  # the transfer below needs liquid tokens
    [alice] = ledger_rows(market, "SELECT public_key FROM accounts WHERE name = 'alice'")
    with open_ledger(home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)

    # 3. the Node client drops: a CSV dataset, a transfer request, a commitment, and a payload changed after signing
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(digits_table(300, 400).to_pylist()))
    key = ["--key", str(client / "me.key"), "--drop", str(drop), "--created-at", CREATED_AT]
    dataset = json.loads(node("dataset", *key, "--task", TASK, "--rows", str(rows), "--name", "node-shard.csv"))
    amount = tokens_to_units("4")
    transfer = json.loads(node("request", *key, "--action", "transfer", "--amount-units", str(amount),
                               "--to", alice["public_key"], "--name", "node-transfer.json"))
    weights = {contributor_pub: 0.75, alice["public_key"]: 0.25}
    commit = json.loads(node("commit", "--key", str(client / "val.key"), "--drop", str(drop), "--epoch", str(epoch),
                             "--weights", json.dumps(weights), "--name", "node-commit.json"))
    tampered_rows = tmp_path / "tampered.json"
    tampered_rows.write_text(json.dumps(digits_table(400, 450).to_pylist()))
    tampered = json.loads(node("dataset", *key, "--task", TASK, "--rows", str(tampered_rows), "--name",
                               "node-tampered.csv", "--tamper"))
    assert [dataset["nonce"], transfer["nonce"], tampered["nonce"], commit["manifest"]["nonce"]] == [1, 2, 3, 1]
    assert sorted(p.name for p in drop.iterdir()) == sorted(  # the rename contract: no dot-temp left behind
        f"{n}{suffix}" for n in ("node-shard.csv", "node-transfer.json", "node-commit.json", "node-tampered.csv")
        for suffix in ("", ".manifest.json"))

    ingest(home)

    contributions = ledger_rows(market, "SELECT c.submission_id, c.status, c.reason, c.rows, a.name "
                                        "FROM contributions c LEFT JOIN accounts a USING (account_id)")
    by_id = {r["submission_id"]: r for r in contributions}
    assert len(contributions) == 4, contributions

    # the dataset: accepted, its 100 CSV rows landed
    ds = by_id[f"{dataset['digest']}-{contributor_pub}-1"]
    assert (ds["status"], ds["reason"], ds["rows"], ds["name"]) == ("accepted", None, 100, "node-alice")
    # the transfer: applied in the recording transaction
    assert by_id[f"{transfer['digest']}-{contributor_pub}-2"]["status"] == "accepted"
    [req] = ledger_rows(market, "SELECT action, amount, counterparty, epoch FROM requests")
    assert (req["action"], req["amount"], req["epoch"]) == ("transfer", amount, epoch)
    balances = {r["name"]: r["liquid"] for r in ledger_rows(
        market, "SELECT a.name, b.liquid FROM balances b JOIN accounts a USING (account_id) "
                "WHERE a.name IN ('alice', 'node-alice')")}
    assert balances == {"node-alice": tokens_to_units("6"), "alice": amount}
    # the commitment: accepted, and the hash the Node client computed is the one the market would compute
    assert by_id[f"{commit['manifest']['digest']}-{validator_pub}-1"]["status"] == "accepted"
    assert commit["commitment"] == weights_commitment(epoch, weights, commit["salt"])
    [stored] = ledger_rows(market, "SELECT commitment, epoch FROM commitments")
    assert (stored["commitment"], stored["epoch"]) == (commit["commitment"], epoch)
    # one byte of the payload flipped after signing: digest_mismatch (§4.6), attributed to the key's account
    [bad] = [r for r in contributions if r["status"] != "accepted"]
    assert (bad["status"], bad["reason"], bad["name"]) == ("quarantined", "digest_mismatch", "node-alice")
    [q] = ledger_rows(market, "SELECT reason, file, detail FROM quarantine")
    assert q["reason"] == "digest_mismatch" and "node-tampered.csv" in q["file"]
    assert not any(p.name.startswith("node-") for p in drop.iterdir())


def test_register_public_key_refuses_what_is_not_an_ed25519_public_key(market):
    with pytest.raises(PublicKeyError, match="--public-key must be 64 hex characters"):
        actions.register(market.home, "short", "contributor", public_key="ab" * 31)
    with pytest.raises(PublicKeyError, match="--public-key must be 64 hex characters"):
        actions.register(market.home, "nothex", "contributor", public_key="zz" * 32)
    with pytest.raises(PublicKeyError, match="not a valid Ed25519 public key"):
        actions.register(market.home, "offcurve", "contributor", public_key="00" * 32)  # the identity: small order
    assert not ledger_rows(market, "SELECT * FROM accounts WHERE name IN ('short', 'nothex', 'offcurve')")
