"""docs/PROTOCOL.md, followed by an outside writer: a submission built from that page alone is accepted.

Nothing here uses the market's own signing code (pipelines.manifest, PyNaCl): the key pair and signature come from the
`cryptography` package's Ed25519, the digest from hashlib, the canonical JSON from the page's own recipe, and the files
are written under the rename contract of §2. Only the ledger set-up (registering the key, as an operator does) and
the ingest under test are the market's.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger import accounts
from ledger.db import open_ledger, transaction
from ledger.epochs import current_epoch
from tests.conftest import TASK, digits_table
from engine.stages.ingest import ingest

pytestmark = pytest.mark.slow  # a real Beam ingest per test

CREATED_AT = "2026-11-25T12:00:00Z"


def public_hex(key: Ed25519PrivateKey) -> str:
    """§1: the 32-byte raw public key as 64 lowercase hex characters."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def write_renamed(final: Path, temp_name: str, data: bytes) -> None:
    """§2: write under a dot-name, flush it, then rename it to its final name."""
    assert temp_name.startswith(".")
    temp = final.with_name(temp_name)
    with open(temp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, final)


def signed_manifest(key: Ed25519PrivateKey, payload_name: str, payload: bytes, *, nonce: int) -> dict:
    """§3: the ten fields, the signature over the canonical JSON of the other nine."""
    fields = {
        "version": 1,
        "kind": "dataset",
        "task": TASK,
        "payload": payload_name,
        "size": len(payload),
        "digest": hashlib.blake2b(payload, digest_size=32).hexdigest(),
        "nonce": nonce,
        "created_at": CREATED_AT,
        "public_key": public_hex(key),
    }
    signed_bytes = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {**fields, "signature": key.sign(signed_bytes).hex()}


def drop_submission(drop: Path, payload_name: str, payload: bytes, manifest: dict) -> None:
    """§2: the payload renamed in first, the manifest last; the manifest formatted freely (indented, unsorted)."""
    write_renamed(drop / payload_name, f".{payload_name}.partial", payload)
    text = json.dumps(dict(reversed(list(manifest.items()))), indent=4) + "\n"
    write_renamed(drop / f"{payload_name}.manifest.json", f".{payload_name}.manifest.json.writing", text.encode("utf-8"))


def register_outsider(market, key: Ed25519PrivateKey) -> str:
    """What the operator does with a public key it was sent (§1): register it as a contributor."""
    with open_ledger(market.home.paths.ledger) as con, transaction(con):
        return accounts.register(con, public_hex(key), "outsider", "contributor", current_epoch(con)).account_id


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    """UTF-8, comma-separated, a header row (§2)."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    writer.writerows([row[c] for c in table.column_names] for row in table.to_pylist())
    return buf.getvalue().encode("utf-8")


def contributions(market) -> list[dict]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        cur = con.execute("SELECT submission_id, epoch, account_id, public_key, nonce, status, reason, rows "
                          "FROM contributions")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


def quarantine_reasons(market) -> list[tuple[str, str | None]]:
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        return con.execute("SELECT reason, account_id FROM quarantine").fetchall()


@pytest.mark.parametrize("payload_name, encode", [("shard.parquet", parquet_bytes), ("shard.csv", csv_bytes)])
def test_a_submission_built_from_the_protocol_alone_is_accepted(market, payload_name, encode):
    key = Ed25519PrivateKey.generate()
    account_id = register_outsider(market, key)
    payload = encode(digits_table(300, 400))  # honest rows the holdout (rows 0..300) has not seen
    manifest = signed_manifest(key, payload_name, payload, nonce=7)
    drop = market.home.paths.drop
    drop_submission(drop, payload_name, payload, manifest)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)

    ingest(market.home)

    [row] = contributions(market)
    assert row["submission_id"] == f"{manifest['digest']}-{manifest['public_key']}-7"  # §4: full hex
    assert (row["status"], row["reason"]) == ("accepted", None)
    assert (row["epoch"], row["account_id"], row["public_key"], row["nonce"]) == (epoch, account_id, public_hex(key), 7)
    assert row["rows"] == 100
    assert quarantine_reasons(market) == []
    # §4.9: accepted files move to archive/epoch=E/; nothing is left in drop/ and nothing is deleted
    archived = market.home.paths.archive / f"epoch={epoch}"
    assert (archived / payload_name).read_bytes() == payload
    assert json.loads((archived / f"{payload_name}.manifest.json").read_text()) == manifest
    assert not (drop / payload_name).exists() and not (drop / f"{payload_name}.manifest.json").exists()


def test_one_flipped_signature_bit_is_bad_signature_attributed_to_nobody(market):
    key = Ed25519PrivateKey.generate()
    register_outsider(market, key)
    payload = parquet_bytes(digits_table(300, 400))
    manifest = signed_manifest(key, "shard.parquet", payload, nonce=7)
    signature = bytearray(bytes.fromhex(manifest["signature"]))
    signature[17] ^= 0x08
    manifest["signature"] = signature.hex()
    drop = market.home.paths.drop
    drop_submission(drop, "shard.parquet", payload, manifest)
    with open_ledger(market.home.paths.ledger, read_only=True) as con:
        epoch = current_epoch(con)

    ingest(market.home)

    [row] = contributions(market)
    assert (row["status"], row["reason"]) == ("quarantined", "bad_signature")
    assert row["account_id"] is None  # §4.3: nothing in an unverified manifest is believed, not even its key
    assert row["submission_id"].startswith("unverified-")
    assert quarantine_reasons(market) == [("bad_signature", None)]
    # §4: an unverified manifest speaks for nobody: only it moves to quarantine/; the payload of that name stays in
    # drop/ to be judged with the manifest that really completes it (or to end `incomplete`)
    held = market.home.paths.quarantine / f"epoch={epoch}"
    assert json.loads((held / "shard.parquet.manifest.json").read_text()) == manifest
    assert not (drop / "shard.parquet.manifest.json").exists()
    assert (drop / "shard.parquet").read_bytes() == payload
