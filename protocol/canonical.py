"""Canonical JSON and BLAKE2b-256 digests (docs/PROTOCOL.md §3), and the widths of keys, signatures and digests.

The signed bytes of a manifest, a weights commitment and the ledger's hash chain are all the canonical JSON of an
object; every digest the market writes is BLAKE2b-256 (32 bytes, no key, no salt) as 64 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from typing import Any

from protocol.files import READ_CHUNK_BYTES

DIGEST_BYTES = 32                              # BLAKE2b-256
DIGEST_HEX_CHARS = 2 * DIGEST_BYTES            # 64
PUBLIC_KEY_BYTES = 32                          # Ed25519 verify key
PUBLIC_KEY_HEX_CHARS = 2 * PUBLIC_KEY_BYTES    # 64
SEED_BYTES = 32                                # Ed25519 signing key seed (keys/NAME.key holds it as hex)
SIGNATURE_BYTES = 64                           # Ed25519 signature
SIGNATURE_HEX_CHARS = 2 * SIGNATURE_BYTES      # 128

WEIGHTS_TASK = "-"  # the manifest `task` of weights and requests: they are for no task, but the field is required


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8, no NaN; floats in Python's shortest round-trip form, so equal inputs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def hasher():
    """A streaming BLAKE2b-256 hasher: `update` it chunk by chunk, then `hexdigest()`."""
    return hashlib.blake2b(digest_size=DIGEST_BYTES)


def payload_digest(data: bytes) -> str:
    """BLAKE2b-256 hex digest of bytes (a payload, or a canonical JSON document)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def json_digest(obj: Any) -> str:
    """BLAKE2b-256 hex digest of an object's canonical JSON."""
    return payload_digest(canonical_json(obj))


def file_digest(path: str | PathLike) -> str:
    """BLAKE2b-256 hex digest of a file, read in chunks so large payloads do not sit in memory."""
    h = hasher()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()
