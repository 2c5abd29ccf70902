"""Signed manifests: canonical JSON, digests, signing, verification and the drop-folder write protocol."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import nacl.signing
import pytest

from pipelines.errors import IngestError, ManifestError, SignatureError
from pipelines.manifest import (
    KINDS,
    MANIFEST_SUFFIX,
    MANIFEST_VERSION,
    Manifest,
    parse_manifest,
    read_manifest,
    sign_manifest,
    verify_signature,
    write_submission,
)
from protocol.canonical import canonical_json, payload_digest

CREATED_AT = "2026-11-25T12:00:00+00:00"


@pytest.fixture()
def key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes(range(32)))


@pytest.fixture()
def payload(tmp_path: Path) -> Path:
    p = tmp_path / "src" / "rows.csv"
    p.parent.mkdir()
    p.write_bytes(b"f0,f1,y\n1.0,2.0,1\n3.0,4.0,0\n")
    return p


def _signed(payload: Path, key: nacl.signing.SigningKey, **kw) -> Manifest:
    args = dict(kind="dataset", task="digits", nonce=7, signing_key=key, created_at=CREATED_AT) | kw
    return sign_manifest(payload, **args)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é", "c": [1, 2]}) == '{"a":"é","b":1,"c":[1,2]}'.encode("utf-8")


def test_payload_digest_is_blake2b_256() -> None:
    assert payload_digest(b"abc") == hashlib.blake2b(b"abc", digest_size=32).hexdigest()
    assert len(payload_digest(b"")) == 64


def test_sign_fills_every_field_and_verifies(payload: Path, key: nacl.signing.SigningKey) -> None:
    m = _signed(payload, key)
    assert m.version == MANIFEST_VERSION and m.kind == "dataset" and m.task == "digits"
    assert m.payload == "rows.csv" and m.size == payload.stat().st_size
    assert m.digest == payload_digest(payload.read_bytes())
    assert m.public_key == key.verify_key.encode().hex() and len(m.signature) == 128
    assert "signature" not in m.signed_fields() and len(m.signed_fields()) == 9
    verify_signature(m)
    # the signature is plain Ed25519 over the canonical JSON of the other fields
    nacl.signing.VerifyKey(bytes.fromhex(m.public_key)).verify(canonical_json(m.signed_fields()),
                                                              bytes.fromhex(m.signature))


@pytest.mark.parametrize("field, value", [
    ("kind", "weights"), ("task", "other"), ("payload", "other.csv"), ("size", 1), ("digest", "0" * 64),
    ("nonce", 8), ("created_at", "2026-11-25T13:00:00+00:00"), ("version", 2),
])
def test_any_changed_field_breaks_the_signature(payload: Path, key: nacl.signing.SigningKey, field: str,
                                                value: object) -> None:
    m = replace(_signed(payload, key), **{field: value})
    with pytest.raises(SignatureError, match="signature"):
        verify_signature(m)


def test_another_key_does_not_verify(payload: Path, key: nacl.signing.SigningKey) -> None:
    other = nacl.signing.SigningKey.generate().verify_key.encode().hex()
    with pytest.raises(SignatureError, match="rows.csv.manifest.json"):
        verify_signature(replace(_signed(payload, key), public_key=other))


def test_read_round_trips_and_ignores_formatting(tmp_path: Path, payload: Path,
                                                  key: nacl.signing.SigningKey) -> None:
    m = _signed(payload, key)
    p = tmp_path / ("rows.csv" + MANIFEST_SUFFIX)
    p.write_text(m.to_json(), encoding="utf-8")
    assert read_manifest(p) == m
    p.write_text(json.dumps(json.loads(m.to_json())), encoding="utf-8")    # reformatted: same fields
    verify_signature(read_manifest(p))


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("nonce"), "nonce"),
    (lambda d: d.update(nonce="7"), "nonce"),
    (lambda d: d.update(nonce=-1), "nonce"),
    (lambda d: d.update(size=True), "size"),
    (lambda d: d.update(kind="model"), "kind"),
    (lambda d: d.update(payload="../etc/passwd"), "payload"),
    (lambda d: d.update(payload=".hidden.csv"), "payload"),
    (lambda d: d.update(digest="XYZ"), "digest"),
    (lambda d: d.update(public_key="ab"), "public_key"),
    (lambda d: d.update(created_at="yesterday"), "created_at"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(extra=1), "extra"),
])
def test_malformed_manifest_names_file_and_field(tmp_path: Path, payload: Path, key: nacl.signing.SigningKey,
                                                 mutate, field: str) -> None:
    doc = json.loads(_signed(payload, key).to_json())
    mutate(doc)
    p = tmp_path / "bad.csv.manifest.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ManifestError, match=rf"bad\.csv\.manifest\.json: field '{field}'"):
        read_manifest(p)


def test_not_json_or_not_object(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="x.manifest.json: not valid UTF-8 JSON"):
        parse_manifest(b"{nope", "x.manifest.json")
    with pytest.raises(ManifestError, match="must be a JSON object"):
        parse_manifest(b"[1, 2]", "x.manifest.json")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path / "absent.manifest.json")


def test_sign_rejects_an_unknown_kind(payload: Path, key: nacl.signing.SigningKey) -> None:
    assert KINDS == ("dataset", "predictions", "weights", "request")
    with pytest.raises(ManifestError, match="field 'kind'"):
        _signed(payload, key, kind="model")


def test_write_submission_renames_into_place_manifest_last(tmp_path: Path, payload: Path,
                                                           key: nacl.signing.SigningKey) -> None:
    drop = tmp_path / "drop"
    m = _signed(payload, key)
    mp = write_submission(drop, payload, m)
    assert mp == drop / "rows.csv.manifest.json"
    assert sorted(p.name for p in drop.iterdir()) == ["rows.csv", "rows.csv.manifest.json"]   # no temp files left
    assert (drop / "rows.csv").read_bytes() == payload.read_bytes()
    assert read_manifest(mp) == m
    assert mp.stat().st_mtime_ns >= (drop / "rows.csv").stat().st_mtime_ns
    with pytest.raises(IngestError, match="already waiting"):
        write_submission(drop, payload, m)
