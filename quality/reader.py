"""The one table reader: bytes or a regular file to Arrow, by suffix; anything undecodable is an UnreadableError."""

from __future__ import annotations

import errno
from pathlib import Path

import pyarrow as pa

from protocol.files import MAX_PAYLOAD_BYTES, NotRegularFile, read_regular
from quality.errors import UnreadableError

PARQUET_SUFFIXES = (".parquet", ".pq")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")
CSV_SUFFIXES = (".csv",)
SUFFIXES = PARQUET_SUFFIXES + IPC_SUFFIXES + CSV_SUFFIXES


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _parquet(data: bytes) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data))


def _ipc(data: bytes) -> pa.Table:
    """Arrow IPC file format (which Feather v2 is), else the stream format."""
    try:
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except pa.ArrowInvalid:
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()


def _csv(data: bytes) -> pa.Table:
    import pyarrow.csv as pcsv

    return pcsv.read_csv(pa.BufferReader(data))


def _why(suffix: str, data: bytes, e: Exception) -> str:
    """A contributor-facing reason for a decode failure."""
    msg = _first_line(e)
    low = msg.lower()
    if suffix in PARQUET_SUFFIXES:
        if not data.startswith(b"PAR1") or not data.endswith(b"PAR1"):
            return f"not a valid Parquet file: truncated or not Parquet (no PAR1 magic at both ends; {msg})"
        return f"not a valid Parquet file: corrupt ({msg})"
    if suffix in IPC_SUFFIXES:
        return f"not a valid Arrow IPC file: neither the IPC file nor the stream format ({msg})"
    if "utf8" in low or "utf-8" in low:
        return f"not a valid CSV file: text is not UTF-8 ({msg})"
    if "expected" in low and "columns" in low:
        return f"not a valid CSV file: rows have different numbers of fields ({msg})"
    return f"not a valid CSV file ({msg})"


def read_table_bytes(data: bytes, name: str) -> pa.Table:
    """Decode a payload to Arrow by the suffix of `name`: Parquet (.parquet/.pq), Arrow IPC file or stream
    (.arrow/.feather/.ipc) or CSV (.csv). Raises UnreadableError naming `name` and why."""
    suffix = Path(name).suffix.lower()
    reader = {**dict.fromkeys(PARQUET_SUFFIXES, _parquet), **dict.fromkeys(IPC_SUFFIXES, _ipc),
              **dict.fromkeys(CSV_SUFFIXES, _csv)}.get(suffix)
    if reader is None:
        raise UnreadableError(name, f"unsupported file type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    try:
        table = reader(bytes(data))
        table.validate(full=True)  # a corrupt file can decode to arrays whose buffers are too short
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as e:
        raise UnreadableError(name, _why(suffix, bytes(data), e)) from None
    try:
        table.schema.names  # column names arrive as bytes; one that is not UTF-8 cannot even be named
    except UnicodeDecodeError:
        raise UnreadableError(name, "a column name is not valid UTF-8") from None
    if suffix in CSV_SUFFIXES:  # pyarrow keeps undecodable text as binary when it cannot infer a string column
        for field in table.schema:
            if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
                raise UnreadableError(name, f"not a valid CSV file: text is not UTF-8 (column '{field.name}')")
    return table


def read_table(path: Path | str, max_bytes: int = MAX_PAYLOAD_BYTES) -> pa.Table:
    """Read one file exactly as ingest reads a payload (protocol.files.read_regular: a regular file with a single
    link, never a symlink, FIFO or device, at most `max_bytes`, the market's max_payload_bytes) and decode it."""
    path = str(path)
    try:
        data = read_regular(path, max_bytes)
    except FileNotFoundError:
        raise UnreadableError(path, "no such file") from None
    except NotRegularFile as e:
        if e.errno == errno.ELOOP:
            raise UnreadableError(path, "is a symbolic link; submit the file itself") from None
        raise UnreadableError(path, f"{e.strerror}; submit a regular file with a single link") from None
    except OSError as e:
        raise UnreadableError(path, f"cannot read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise UnreadableError(path, f"larger than max_payload_bytes={max_bytes}; ingest would quarantine it as "
                                    "too_large")
    return read_table_bytes(data, path)
