"""Canonical JSON and BLAKE2b digests: what the hash chain and settlement idempotency are built on."""

from __future__ import annotations

from typing import Any

from protocol.canonical import DIGEST_HEX_CHARS, canonical_json, json_digest, payload_digest

GENESIS_HASH = "0" * DIGEST_HEX_CHARS


def digest(obj: Any) -> str:
    """BLAKE2b-256 hex of an object's canonical JSON (protocol.canonical)."""
    return json_digest(obj)


def digest_text(document: str) -> str:
    """BLAKE2b-256 hex of a canonical JSON document kept as text: equals digest(json.loads(document))."""
    return payload_digest(document.encode("utf-8"))


def chain_hash(prev_hash: str, epoch: int, inputs_digest: str, results_digest: str) -> str:
    """The epoch's link in the hash chain: commits to its inputs, its results and the previous link."""
    return digest({"prev": prev_hash, "epoch": epoch, "inputs": inputs_digest, "results": results_digest})


EPOCH_SIGNATURE_DOMAIN = "tributary epoch hash v1"


def epoch_signing_message(epoch: int, hash_: str) -> bytes:
    """What the operator signs for a settled epoch (epochs.operator_signature): its number and chain hash."""
    return canonical_json({"domain": EPOCH_SIGNATURE_DOMAIN, "epoch": epoch, "hash": hash_})


def signature_valid(public_key_hex: str, message: bytes, signature_hex: str | None) -> bool:
    """Whether an Ed25519 signature (hex) over `message` verifies under a public key (hex); False on any malformed
    input."""
    import nacl.exceptions
    import nacl.signing

    if not signature_hex:
        return False
    try:
        nacl.signing.VerifyKey(bytes.fromhex(public_key_hex)).verify(message, bytes.fromhex(signature_hex))
        return True
    except (ValueError, TypeError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
