"""Errors of the CLI layer; the core packages' typed errors are re-exported so callers catch one family."""

from __future__ import annotations

from ledger.errors import LedgerError, SettlementConflict  # noqa: F401
from pipelines.errors import IngestError, ManifestError, SignatureError  # noqa: F401
from quality.errors import QualityError, SchemaError, TaskError  # noqa: F401


class TributaryError(Exception):
    """A user-facing error of the CLI layer."""


class KeyFileError(TributaryError):
    """A key file is missing, malformed or would be overwritten."""


# What the CLI reports as the user's error (one line, exit 1): the typed families, whose every raise is a rule the user
# (contributor, validator, operator) broke. Anything else is a bug (traceback, exit 2): a ValueError from NumPy or
# Yuma's own checks is not the user's fault.
USER_ERRORS = (TributaryError, LedgerError, IngestError, QualityError)

# Plain exceptions that a function outside those families declares for bad input from its caller, by (module,
# qualified name): raised in or through that function they are the user's error; the same type elsewhere is a bug.
DECLARED_ERRORS: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    ("tributary.settings", "Settings.load"): (ValueError,),      # settings.toml: unknown keys, not TOML
    ("ledger.money", "tokens_to_units"): (ValueError,),          # an amount that is not a whole number of units
    ("tributary.actions", "submit"): (FileNotFoundError,),       # no such file to submit
    ("tributary.actions", "task_init"): (FileNotFoundError,),    # no such holdout or challenge file
    ("rewards.consensus", "params_from_doc"): (ValueError,),     # a yuma-vectors file of an unknown version
    ("rewards.yuma_core", "YumaParams.__post_init__"): (ValueError,),  # Yuma settings out of range (settings.toml)
    ("rewards.backend", "get_xp"): (ValueError, RuntimeError),   # array_backend: unknown, or cupy not usable here
}


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` is a user error: a USER_ERRORS type, or a type DECLARED_ERRORS lists for a function it came
    through (its traceback, from the catcher to the raise)."""
    if isinstance(exc, USER_ERRORS):
        return True
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        declared = DECLARED_ERRORS.get((frame.f_globals.get("__name__", ""), frame.f_code.co_qualname), ())
        if declared and isinstance(exc, declared):
            return True
        tb = tb.tb_next
    return False
