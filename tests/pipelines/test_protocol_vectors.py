"""docs/PROTOCOL.md §7, the test vectors, read from the page and reproduced twice: (a) by the market's own code
(engine.keys, pipelines.manifest, protocol.canonical) and (b) by a second client built from the page alone (the
`cryptography` package's Ed25519, hashlib's BLAKE2b, the json recipe of §3). A change to the signed bytes, the digest
or the key derivation that is not also made to the page fails here."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
CREATED_AT = "2026-01-01T00:00:00Z"
SIGNED_FIELDS = ("version", "kind", "task", "payload", "size", "digest", "nonce", "created_at", "public_key")


def _blocks() -> list[dict[str, str]]:
    """Every ```text block of §7 as {field: value} (one `field: value` per line)."""
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text.split("\n## 7. Test vectors\n", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for body in re.findall(r"^```text\n(.*?)^```$", section, flags=re.S | re.M):
        fields = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            assert sep, f"§7: not a 'field: value' line: {line!r}"
            fields[name] = value
        blocks.append(fields)
    return blocks


BLOCKS = _blocks()
KEY = BLOCKS[0]
VECTORS = BLOCKS[1:]


def _payload(v: dict[str, str]) -> bytes:
    data = json.loads(v["payload"]).encode("utf-8")
    assert data == bytes.fromhex(v["payload_hex"]), "the payload's two spellings on the page differ"
    return data


def test_the_page_has_a_key_and_a_vector_per_kind() -> None:
    assert set(KEY) == {"seed", "public_key"}
    assert KEY["seed"] == bytes(range(32)).hex()
    assert sorted(v["kind"] for v in VECTORS) == ["dataset", "request", "weights"]
    for v in VECTORS:
        assert set(v) == {"kind", "payload", "payload_hex", "blake2b_256", "signed_bytes", "signature"}
        assert set(json.loads(v["signed_bytes"])) == set(SIGNED_FIELDS)


# ------------------------------------------------------------------------------------ (a) the market's own code


def test_our_key_derivation_gives_the_public_key(tmp_path) -> None:
    from engine import keys

    (tmp_path / "vector.key").write_text(KEY["seed"] + "\n")
    assert keys.public_hex(keys.load(tmp_path, "vector")) == KEY["public_key"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["kind"])
def test_our_code_reproduces_the_vector(v, tmp_path) -> None:
    from engine import keys
    from pipelines.manifest import parse_manifest, sign_manifest, verify_signature
    from protocol.canonical import canonical_json, file_digest, payload_digest

    data = _payload(v)
    fields = json.loads(v["signed_bytes"])
    (tmp_path / "vector.key").write_text(KEY["seed"] + "\n")
    payload = tmp_path / fields["payload"]
    payload.write_bytes(data)
    assert payload_digest(data) == file_digest(payload) == v["blake2b_256"]

    m = sign_manifest(payload, kind=fields["kind"], task=fields["task"], nonce=fields["nonce"],
                      signing_key=keys.load(tmp_path, "vector"), created_at=fields["created_at"])
    assert canonical_json(m.signed_fields()).decode("utf-8") == v["signed_bytes"]
    assert m.signature == v["signature"]
    assert m.kind == v["kind"] and m.created_at == CREATED_AT
    # The manifest as written parses back to the same, and verifies.
    again = parse_manifest(m.to_json().encode("utf-8"), f"{m.payload}.manifest.json")
    assert again == m
    verify_signature(again)
    if v["kind"] == "request":
        from pipelines.requests import parse_request, request_payload

        doc = json.loads(data)
        assert request_payload(doc.pop("action"), **doc) == data
        parse_request(data, fields["payload"])


# ------------------------------------------------------------------------------------ (b) a second client


def test_a_second_client_derives_the_public_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEY["seed"]))
    assert key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == KEY["public_key"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["kind"])
def test_a_second_client_reproduces_the_vector(v) -> None:
    """Only the page: §3's fields and canonical JSON recipe, BLAKE2b-256 from hashlib, Ed25519 from `cryptography`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    data = _payload(v)
    digest = hashlib.blake2b(data, digest_size=32).hexdigest()
    assert digest == v["blake2b_256"]
    page = json.loads(v["signed_bytes"])
    fields = {"version": 1, "kind": v["kind"], "task": page["task"], "payload": page["payload"], "size": len(data),
              "digest": digest, "nonce": page["nonce"], "created_at": CREATED_AT, "public_key": KEY["public_key"]}
    signed = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert signed == v["signed_bytes"].encode("utf-8")
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(KEY["seed"]))
    assert key.sign(signed).hex() == v["signature"]
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(KEY["public_key"])).verify(bytes.fromhex(v["signature"]), signed)
