"""Canonical JSON and BLAKE2b digests: what the hash chain and settlement idempotency are built on."""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8; floats in Python's shortest round-trip form, so equal inputs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest(obj: Any) -> str:
    """BLAKE2b-256 hex of an object's canonical JSON."""
    return hashlib.blake2b(canonical_json(obj), digest_size=32).hexdigest()


def digest_text(document: str) -> str:
    """BLAKE2b-256 hex of a canonical JSON document kept as text: equals digest(json.loads(document))."""
    return hashlib.blake2b(document.encode(), digest_size=32).hexdigest()


def chain_hash(prev_hash: str, epoch: int, inputs_digest: str, results_digest: str) -> str:
    """The epoch's link in the hash chain: commits to its inputs, its results and the previous link."""
    return digest({"prev": prev_hash, "epoch": epoch, "inputs": inputs_digest, "results": results_digest})
