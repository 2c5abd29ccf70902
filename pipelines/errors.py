"""Typed ingest errors: each message names the file and the rule it broke."""

from __future__ import annotations


class IngestError(Exception):
    """An ingest run or a submission could not go ahead; the message says what to do."""


class ManifestError(IngestError):
    """A manifest is malformed; the message names the file and the field."""


class SignatureError(IngestError):
    """A manifest's Ed25519 signature does not verify for its public key."""
