"""Open registration's proof of work (docs/PROTOCOL.md §6, `register`): the bytes hashed, the difficulty, the solver.

A key that registers itself proves work bound to its own public key and a recent epoch:

    digest = BLAKE2b-256(canonical JSON of {"epoch": E, "pow_nonce": N, "public_key": HEX})

i.e. exactly the bytes `{"epoch":E,"pow_nonce":N,"public_key":"HEX"}` (keys in that order, decimal integers, no
spaces, HEX the 64 lowercase hex digits of the signer's key), and the proof holds when `digest`, read as a 256-bit
big-endian number, has at least `registration_pow_bits` leading zero bits. E must be the open epoch or the one before
it, so proofs cannot be stockpiled; the key is in the hashed bytes, so a proof is worth nothing to another key.

A leaf module: the standard library and protocol/ only.
"""

from __future__ import annotations

import hashlib
import re

from protocol.canonical import DIGEST_BYTES, canonical_json

SELF_ROLES = ("contributor", "validator")  # the roles a key may register itself under
NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}"  # an account name: 1-64 of A-Z a-z 0-9 _ . -, not starting '.'
MAX_POW_NONCE = 2**63 - 1
MAX_POW_BITS = 8 * DIGEST_BYTES
POW_EPOCHS_ACCEPTED = 2  # the open epoch E and E - 1


def valid_name(name: object) -> bool:
    """NAME_PATTERN, and not 16 or 64 hex digits (an account id's or a public key's form: `find` would confuse them)."""
    if not isinstance(name, str) or re.fullmatch(NAME_PATTERN, name) is None:
        return False
    return not (len(name) in (16, 64) and re.fullmatch(r"[0-9A-Fa-f]+", name))


def pow_bytes(public_key: str, epoch: int, pow_nonce: int) -> bytes:
    """The bytes the proof hashes: the canonical JSON (docs/PROTOCOL.md §3) of the three fields."""
    return canonical_json({"public_key": public_key, "epoch": epoch, "pow_nonce": pow_nonce})


def leading_zero_bits(digest: bytes) -> int:
    """Leading zero bits of `digest` read as a big-endian number (the first byte's high bit first)."""
    value = int.from_bytes(digest, "big")
    return 8 * len(digest) - value.bit_length()


def pow_bits_of(public_key: str, epoch: int, pow_nonce: int) -> int:
    """How many leading zero bits the proof (public_key, epoch, pow_nonce) has."""
    return leading_zero_bits(hashlib.blake2b(pow_bytes(public_key, epoch, pow_nonce), digest_size=DIGEST_BYTES).digest())


def solve(public_key: str, epoch: int, bits: int, start: int = 0) -> int:
    """The least pow_nonce >= start whose proof has at least `bits` leading zero bits (about 2**bits hashes)."""
    if not 0 <= bits <= MAX_POW_BITS:
        raise ValueError(f"bits must lie in [0, {MAX_POW_BITS}], got {bits}")
    prefix = f'{{"epoch":{int(epoch)},"pow_nonce":'.encode()
    suffix = f',"public_key":"{public_key}"}}'.encode()
    limit = 1 << (8 * DIGEST_BYTES - bits)  # the digest as a number must be below this
    n = start
    while True:
        d = hashlib.blake2b(prefix + str(n).encode() + suffix, digest_size=DIGEST_BYTES).digest()
        if int.from_bytes(d, "big") < limit:
            assert pow_bits_of(public_key, epoch, n) >= bits  # the fast bytes are the canonical ones
            return n
        n += 1
