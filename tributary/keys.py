"""Ed25519 keys on disk (`keys/NAME.key`, mode 0600) and each key's local nonce counter."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing

from tributary.errors import KeyFileError

KEY_SUFFIX = ".key"
NONCE_SUFFIX = ".nonce"


def key_path(keys_dir: Path, name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"{name!r} is not a valid key name: use letters, digits, '-' or '_'")
    return keys_dir / f"{name}{KEY_SUFFIX}"


def generate(keys_dir: Path, name: str) -> nacl.signing.SigningKey:
    """Write a new key file readable by its owner only; refuses to overwrite an existing key."""
    path = key_path(keys_dir, name)
    if path.exists():
        raise KeyFileError(f"{path} already exists; keys are never overwritten (delete it yourself if you mean to)")
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = nacl.signing.SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.encode().hex() + "\n")
    return key


def load(keys_dir: Path, name: str) -> nacl.signing.SigningKey:
    """Read a key file written by `generate`."""
    path = key_path(keys_dir, name)
    if not path.exists():
        raise KeyFileError(f"no key {path}; make one with `tributary keygen {name}`")
    try:
        return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))
    except ValueError as e:
        raise KeyFileError(f"{path} is not a 32-byte hex Ed25519 seed: {e}") from None


def public_hex(key: nacl.signing.SigningKey) -> str:
    return key.verify_key.encode().hex()


def next_nonce(keys_dir: Path, name: str) -> int:
    """Advance and persist the key's strictly increasing submission nonce."""
    path = keys_dir / f"{name}{NONCE_SUFFIX}"
    last = int(path.read_text()) if path.exists() else 0
    nonce = last + 1
    tmp = path.with_suffix(".nonce.tmp")
    tmp.write_text(str(nonce))
    tmp.replace(path)
    return nonce
