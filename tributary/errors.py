"""Errors of the CLI layer; the core packages' typed errors are re-exported so callers catch one family."""

from __future__ import annotations

from ledger.errors import LedgerError, SettlementConflict  # noqa: F401
from pipelines.errors import IngestError, ManifestError, SignatureError  # noqa: F401
from quality.errors import QualityError, SchemaError, TaskError  # noqa: F401


class TributaryError(Exception):
    """A user-facing error of the CLI layer."""


class KeyFileError(TributaryError):
    """A key file is missing, malformed or would be overwritten."""


USER_ERRORS = (TributaryError, LedgerError, IngestError, QualityError, ValueError, FileNotFoundError)
