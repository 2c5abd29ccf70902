"""Signed submission manifests (DESIGN 4.1): tributary signs with these functions, ingest verifies with them."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path

import nacl.exceptions
import nacl.signing

from pipelines.errors import IngestError, ManifestError, SignatureError
from protocol.canonical import DIGEST_HEX_CHARS, PUBLIC_KEY_HEX_CHARS, SIGNATURE_HEX_CHARS, canonical_json, \
    file_digest, hasher
from protocol.files import READ_CHUNK_BYTES, TEMP_PREFIX, write_atomic

MANIFEST_VERSION = 1
MANIFEST_SUFFIX = ".manifest.json"
KINDS = ("dataset", "predictions", "weights", "request")
MAX_MANIFEST_BYTES = 64 * 1024      # a manifest is a few hundred bytes; anything far larger is not one
MAX_NONCE = 2**63 - 1               # nonces are stored as BIGINT: 0 <= nonce < 2^63
MAX_SIZE_FIELD = 2**53 - 1          # a size field above this cannot be a file anyone sends (max_payload_bytes decides)
MAX_PAYLOAD_NAME_BYTES = 255        # a file name on every filesystem we target
MAX_TASK_NAME_CHARS = 64
MAX_CREATED_AT_CHARS = 64
_TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Manifest:
    """What a contributor claims about one payload, signed with their Ed25519 key."""

    version: int
    kind: str
    task: str
    payload: str
    size: int
    digest: str
    nonce: int
    created_at: str
    public_key: str
    signature: str

    def signed_fields(self) -> dict:
        """All fields but the signature: the message the signature covers (as canonical JSON)."""
        d = asdict(self)
        del d["signature"]
        return d

    def to_json(self) -> str:
        """The manifest file's text: sorted keys, indented for people, newline-terminated."""
        return json.dumps(asdict(self), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def check_payload_name(name: str) -> str | None:
    """Why `name` is not a plain file name in the drop folder, or None when it is."""
    if not name:
        return "must not be empty"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8"
    if len(encoded) > MAX_PAYLOAD_NAME_BYTES:
        return f"must be at most {MAX_PAYLOAD_NAME_BYTES} bytes"
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        return "must be a plain file name, without a directory"
    if name.startswith(TEMP_PREFIX):
        return "must not start with '.' (those are temporary names)"
    if name.endswith(MANIFEST_SUFFIX):
        return f"must not end with {MANIFEST_SUFFIX}"
    return None


def sign_manifest(payload: Path, *, kind: str, task: str, nonce: int, signing_key: nacl.signing.SigningKey,
                  created_at: str) -> Manifest:
    """Describe and sign `payload` for submission under `signing_key`."""
    payload = Path(payload)
    m = Manifest(
        version=MANIFEST_VERSION, kind=kind, task=task, payload=payload.name, size=payload.stat().st_size,
        digest=file_digest(payload), nonce=nonce, created_at=created_at,
        public_key=signing_key.verify_key.encode().hex(), signature="0" * SIGNATURE_HEX_CHARS,
    )
    _validate(asdict(m), payload.name + MANIFEST_SUFFIX)
    sig = signing_key.sign(canonical_json(m.signed_fields())).signature.hex()
    return Manifest(**{**asdict(m), "signature": sig})


def verify_signature(m: Manifest) -> None:
    """Raise SignatureError unless `m.signature` is the key's Ed25519 signature over the other fields."""
    try:
        key = nacl.signing.VerifyKey(bytes.fromhex(m.public_key))
        key.verify(canonical_json(m.signed_fields()), bytes.fromhex(m.signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise SignatureError(
            f"{m.payload}{MANIFEST_SUFFIX}: field 'signature': Ed25519 signature does not verify for public key "
            f"{m.public_key[:16]}… ({type(e).__name__})"
        ) from None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(v: object, chars: int) -> bool:
    return isinstance(v, str) and len(v) == chars and _HEX.fullmatch(v) is not None


def _field_rule(name: str, v: object) -> str | None:
    """Why field `name` with value `v` is invalid, or None."""
    if name == "version":
        return None if _is_int(v) and v == MANIFEST_VERSION else f"must be {MANIFEST_VERSION}"
    if name == "kind":
        return None if v in KINDS else f"must be one of {', '.join(KINDS)}"
    if name == "task":
        if not isinstance(v, str) or not 0 < len(v) <= MAX_TASK_NAME_CHARS or not _TASK_NAME.fullmatch(v):
            return f"must be 1 to {MAX_TASK_NAME_CHARS} characters of A-Z a-z 0-9 _ . -"
        return None
    if name == "payload":
        return check_payload_name(v) if isinstance(v, str) else "must be a string"
    if name == "size":
        return None if _is_int(v) and 1 <= v <= MAX_SIZE_FIELD else f"must be an integer from 1 to {MAX_SIZE_FIELD}"
    if name == "nonce":
        return None if _is_int(v) and 0 <= v <= MAX_NONCE else "must be an integer from 0 to 2^63 - 1"
    if name == "digest":
        return None if _is_hex(v, DIGEST_HEX_CHARS) else f"must be {DIGEST_HEX_CHARS} lowercase hex characters"
    if name == "public_key":
        return None if _is_hex(v, PUBLIC_KEY_HEX_CHARS) else f"must be {PUBLIC_KEY_HEX_CHARS} lowercase hex characters"
    if name == "signature":
        return None if _is_hex(v, SIGNATURE_HEX_CHARS) else f"must be {SIGNATURE_HEX_CHARS} lowercase hex characters"
    if name == "created_at":
        if not isinstance(v, str) or len(v) > MAX_CREATED_AT_CHARS:
            return f"must be an ISO-8601 string of at most {MAX_CREATED_AT_CHARS} characters"
        try:
            datetime.fromisoformat(v)
        except ValueError:
            return "must be an ISO-8601 time"
        return None
    return "unknown field"


def _validate(doc: dict, file: str) -> None:
    """Raise ManifestError naming the file and the first bad, missing or unknown field."""
    names = [f.name for f in fields(Manifest)]
    for name in names:
        if name not in doc:
            raise ManifestError(f"{file}: field '{name}': missing")
    for name in sorted(doc):
        rule = _field_rule(name, doc[name])
        if rule:
            raise ManifestError(f"{file}: field '{name}': {rule}")


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object with a key twice is ambiguous (which one was signed?): refuse it."""
    doc: dict = {}
    for k, v in pairs:
        if k in doc:
            raise ValueError(f"field {k!r} appears twice")
        doc[k] = v
    return doc


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "…"


def parse_manifest(data: bytes, file: str) -> Manifest:
    """Parse and check manifest bytes; `file` is the name used in error messages."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{file}: larger than MAX_MANIFEST_BYTES={MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{file}: not valid UTF-8 JSON ({_short(e)})") from None
    except RecursionError:
        raise ManifestError(f"{file}: not a manifest (JSON nested too deeply)") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{file}: must be a JSON object")
    _validate(doc, file)
    return Manifest(**doc)


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest file; ManifestError names the file and the field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ManifestError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path.name}: larger than MAX_MANIFEST_BYTES={MAX_MANIFEST_BYTES}")
    return parse_manifest(data, path.name)


def write_submission(drop: Path, payload: Path, m: Manifest) -> Path:
    """Put payload and manifest in `drop` under temp names, then rename them in, manifest last; return its path."""
    drop = Path(drop)
    drop.mkdir(parents=True, exist_ok=True)
    rule = check_payload_name(m.payload)
    if rule:
        raise ManifestError(f"{m.payload}{MANIFEST_SUFFIX}: field 'payload': {rule}")
    target = drop / m.payload
    manifest_path = drop / (m.payload + MANIFEST_SUFFIX)
    for p in (target, manifest_path):
        if p.exists():
            raise IngestError(f"{p}: already waiting in the drop folder; wait for ingest to take it or rename the file")

    def copy_payload(f) -> None:
        # Streamed in chunks, and hashed as copied: a payload that changed after it was signed never reaches drop/.
        h, size = hasher(), 0
        with open(payload, "rb") as src:
            while chunk := src.read(READ_CHUNK_BYTES):
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
        if size != m.size or h.hexdigest() != m.digest:
            raise IngestError(f"{payload}: changed while it was being submitted (its size or BLAKE2b-256 digest is "
                              "no longer the signed manifest's); submit it again")

    # Each through a dot-prefixed temporary name (ingest ignores those), fsynced and renamed in: payload, then manifest.
    write_atomic(target, copy_payload)
    write_atomic(manifest_path, lambda f: f.write(m.to_json().encode("utf-8")))
    return manifest_path
