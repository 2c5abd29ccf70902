"""Ed25519 keys on disk (`keys/NAME.key`, mode 0600) and each key's local nonce counter."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import nacl.bindings
import nacl.signing

from engine.errors import KeyFileError, PublicKeyError
from protocol.canonical import PUBLIC_KEY_BYTES, PUBLIC_KEY_HEX_CHARS, SEED_BYTES
from protocol.files import write_atomic

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
        raise KeyFileError(f"{path} is not a {SEED_BYTES}-byte hex Ed25519 seed: {e}") from None


def public_hex(key: nacl.signing.SigningKey) -> str:
    return key.verify_key.encode().hex()


def parse_public_hex(text: str, *, option: str = "--public-key") -> str:
    """A public key sent as hex (docs/PROTOCOL.md §1), checked and returned as 64 lowercase hex characters.

    Upper- or lowercase hex is accepted; the 32 bytes must encode a valid Ed25519 point (on the curve, in the
    prime-order subgroup, canonically encoded), as every key made by Ed25519 key generation does: a typo or a key of
    another scheme is refused here rather than registered as an account that can never sign."""
    rule = f"{option} must be {PUBLIC_KEY_HEX_CHARS} hex characters (a {PUBLIC_KEY_BYTES}-byte Ed25519 public key)"
    if len(text) != PUBLIC_KEY_HEX_CHARS or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise PublicKeyError(f"{rule}, got {len(text)} characters: {text[:80]!r}")
    raw = bytes.fromhex(text)
    if nacl.bindings.has_crypto_core_ed25519 and not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise PublicKeyError(f"{rule}: {text.lower()} is not a valid Ed25519 public key (not a point of the curve's "
                             "prime-order group); send the public key your key generation printed")
    return text.lower()


def next_nonce(keys_dir: Path, name: str) -> int:
    """Advance and persist the key's strictly increasing submission nonce (keys/NAME.nonce; no ledger needed).

    Concurrent submits with one key each get their own nonce (an exclusive lock on keys/NAME.nonce.lock), and the
    new value is on disk (written aside, then renamed in) before the caller signs with it.
    """
    path = key_path(keys_dir, name).with_suffix(NONCE_SUFFIX)
    fd = os.open(path.with_suffix(".nonce.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            last = int(path.read_text()) if path.exists() else 0
        except ValueError:
            raise KeyFileError(f"{path} does not hold an integer nonce; put the last nonce this key used in it") from None
        nonce = last + 1
        write_atomic(path, lambda f: f.write(str(nonce).encode("ascii")))
        return nonce
    finally:
        os.close(fd)  # releases the lock


OPERATOR_KEY = "operator"  # keys/operator.key: signs each settled epoch's chain hash and the public export


def operator_key(keys_dir: Path) -> nacl.signing.SigningKey:
    """The operator's signing key, made on first use (keys/operator.key, mode 0600, like every key)."""
    if key_path(keys_dir, OPERATOR_KEY).exists():
        return load(keys_dir, OPERATOR_KEY)
    try:
        return generate(keys_dir, OPERATOR_KEY)
    except KeyFileError:  # made meanwhile by another process: use that one
        return load(keys_dir, OPERATOR_KEY)


def signer(key: nacl.signing.SigningKey):
    """message -> its Ed25519 signature as hex: what settlement and the public export sign with."""
    return lambda message: key.sign(message).signature.hex()
