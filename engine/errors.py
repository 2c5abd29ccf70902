"""Errors of the CLI layer; the core packages' typed errors are re-exported so callers catch one family."""

from __future__ import annotations

from ledger.errors import LedgerError, SettlementConflict  # noqa: F401
from pipelines.errors import IngestError, ManifestError, SignatureError  # noqa: F401
from quality.errors import QualityError, SchemaError, TaskError  # noqa: F401
from rewards.errors import BackendUnavailable, SettingError  # noqa: F401


class TributaryError(Exception):
    """A user-facing error of the CLI layer."""


class KeyFileError(TributaryError):
    """A key file is missing, malformed or would be overwritten."""


class PublicKeyError(TributaryError, ValueError):
    """A public key given as hex (`register --public-key`) is not 64 hex characters of a valid Ed25519 point."""


class SettingsError(TributaryError, ValueError):
    """settings.toml is not TOML, or names a setting that does not exist."""


class VerificationFailed(TributaryError):
    """`tributary verify` found problems in a public export (each printed on its own line before this one)."""


class MissingFileError(TributaryError, FileNotFoundError):
    """A file the user named (to submit, a holdout, a challenge) does not exist."""


# What the CLI reports as the user's error (one line, exit 1): the typed families, whose every raise is a rule the user
# (contributor, validator, operator) broke. Anything else is a bug (traceback, exit 2): a plain ValueError from NumPy
# or from Yuma's checks of its input arrays is not the user's fault. A boundary that judges user input raises one of
# these types (or a subclass that is also the builtin type its callers expect), never a bare builtin.
USER_ERRORS = (TributaryError, LedgerError, IngestError, QualityError, SettingError)


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is a user error (one of USER_ERRORS) rather than a bug."""
    return isinstance(exc, USER_ERRORS)
