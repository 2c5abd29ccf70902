"""Typed quality errors, each with a message a contributor or operator can act on."""

from __future__ import annotations

FILE_FIELD = "<file>"  # SchemaError.field for a problem with the whole file rather than one column


class QualityError(Exception):
    """Base class for quality errors."""


class SchemaError(QualityError):
    """A payload does not fit the task schema (or cannot be read at all)."""

    def __init__(self, file: str | None, field: str, rule: str):
        self.file, self.field, self.rule = file, field, rule
        where = "" if file is None else f"{file}: "
        what = "" if field == FILE_FIELD else f"column '{field}': "
        super().__init__(f"{where}{what}{rule}")


class TaskError(QualityError):
    """A task file is missing or malformed; the message names the file and the key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file, self.key = file, key
        super().__init__(message)


class UnreadableError(SchemaError):
    """A payload cannot be decoded at all (corrupt or truncated file, bad encoding, unsupported format)."""

    def __init__(self, file: str | None, why: str):
        self.why = why
        super().__init__(file, FILE_FIELD, f"unreadable: {why}")
