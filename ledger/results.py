"""The results digest of an epoch: recomputed from the tables, by settlement and by the audit alike.

Four versions, chosen per epoch by `epochs.results_version` (NULL: 1), so every settled epoch recomputes as it was:
- 1: BLAKE2b of the canonical JSON of every row (Python objects; ~10 s for an epoch paying 1M accounts);
- 2: BLAKE2b over the same rows as Arrow columns, each in a fixed binary form (`columns_digest`; ~0.6 s at 1M);
- 3: the same binary form, but each column hashed on its own with SHA-256 (hardware-accelerated, and the columns
  hashed in parallel threads), then the column digests hashed per table (~0.1 s at 1M);
- 4: version 3's form over version 3's tables plus the originality figures of the epoch's contributions and what
  its rows added to each task's lake (`epoch_values`, migration 10): the market pays for information and says why.
Each version hashes its own tables (`result_queries`): an epoch settled before the originality figures existed
recomputes from exactly the rows it was settled with.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import duckdb

from ledger.db import complete_pending
from ledger.digest import digest
from protocol.canonical import canonical_json

RESULTS_VERSION = 4  # what settlement writes now
KNOWN_VERSIONS = (1, 2, 3, 4)
V2_DOMAIN = b"tributary results v2\n"
V3_DOMAIN = b"tributary results v3\n"
V4_DOMAIN = b"tributary results v4\n"

# Each query lists an epoch's rows in a fixed order; timestamps are left out so replays hash equal.
RESULT_REWARD_COLUMNS = ("account_id", "role", "value", "model_score", "weight", "consensus", "incentive", "dividends",
                         "amount", "stake", "validator_trust")
RESULT_TRANSFER_COLUMNS = ("id", "debit_account", "debit_bucket", "credit_account", "credit_bucket", "amount", "kind",
                           "memo")
RESULT_QUERIES = {
    "rewards": f"SELECT {', '.join(RESULT_REWARD_COLUMNS)} FROM rewards WHERE epoch = ? ORDER BY account_id",
    "transfers": f"SELECT {', '.join(RESULT_TRANSFER_COLUMNS)} FROM transfers WHERE epoch = ? ORDER BY id",
    "bonds": "SELECT validator, miner, bond FROM bonds WHERE epoch = ? ORDER BY validator, miner",
    "weights": "SELECT validator, miner, weight FROM weights WHERE epoch = ? ORDER BY validator, miner",
    "validator_reports": "SELECT validator, similarity_to_consensus, similarity_to_own_history FROM validator_reports "
                         "WHERE epoch = ? ORDER BY validator",
    "contributions": "SELECT submission_id, account_id, task, kind, rows, status, reason, digest, duplicate_rows, value "
                     "FROM contributions WHERE epoch = ? ORDER BY submission_id",
}

# Added after epochs were settled without them: in version 1 hashed only when the epoch has such rows, so the digests
# of epochs settled before they existed (the hash chain) still recompute the same. Version 2 always hashes them.
LATER_RESULT_QUERIES = {
    "duplicate_sources": "SELECT submission_id, duplicate_of FROM contributions "
                         "WHERE epoch = ? AND duplicate_of IS NOT NULL ORDER BY submission_id",
}

# Added in version 4 (migration 10): each contribution's originality figures, and what the epoch added per task.
V4_RESULT_QUERIES = {
    "originality": "SELECT submission_id, judged_rows, unoriginal_rows, gate_rows, originality_p, median_p, "
                   "value_without_originality FROM contributions WHERE epoch = ? ORDER BY submission_id",
    "epoch_values": "SELECT task, lake_rows, new_rows, admitted_rows, test_rows, lake_utility, gain FROM epoch_values "
                    "WHERE epoch = ? ORDER BY task",
}


def result_queries(version: int = RESULTS_VERSION) -> dict[str, str]:
    """The tables a columnar results version (2-4) hashes, name -> query, in the order the digest takes them."""
    return {**RESULT_QUERIES, **LATER_RESULT_QUERIES, **(V4_RESULT_QUERIES if version >= 4 else {})}


RESULT_TABLES = tuple(result_queries(RESULTS_VERSION))  # what settlement hashes now, in the digest's order


def results_digest(con: duckdb.DuckDBPyConnection, epoch: int, version: int | None = None) -> str:
    """BLAKE2b of every row an epoch's settlement produced or confirmed, in the epoch's results version
    (None: the version the epoch was settled with)."""
    version = settled_version(con, epoch) if version is None else version
    if version == 1:
        return _digest_v1(con, epoch)
    if version in (2, 3, 4):
        return columns_digest(result_tables(con, epoch, version=version), version)
    raise ValueError(f"epoch {epoch}: unknown results_version {version}; this Tributary knows versions "
                     f"{', '.join(map(str, KNOWN_VERSIONS))}")


def result_tables(con: duckdb.DuckDBPyConnection, epoch: int, *, only: tuple[str, ...] | None = None,
                  version: int = RESULTS_VERSION) -> dict:
    """An epoch's result rows as Arrow tables, in the order and form the columnar versions (2-4) hash them
    (`only`: these)."""
    complete_pending(con)
    return {name: con.sql(sql, params=[epoch]).to_arrow_table()
            for name, sql in result_queries(version).items() if only is None or name in only}


def settled_version(con: duckdb.DuckDBPyConnection, epoch: int) -> int:
    """The results version an epoch was settled with: 1 for epochs settled before versions were recorded."""
    try:
        row = con.execute("SELECT results_version FROM epochs WHERE epoch = ?", [epoch]).fetchone()
    except duckdb.BinderException:  # a ledger read before its migration (read-only): version 1 throughout
        return 1
    return int(row[0]) if row and row[0] is not None else 1


def _digest_v1(con: duckdb.DuckDBPyConnection, epoch: int) -> str:
    # Tuples encode as JSON arrays exactly as lists do: no per-row copy.
    tables = {name: con.execute(sql, [epoch]).fetchall() for name, sql in RESULT_QUERIES.items()}
    for name, sql in LATER_RESULT_QUERIES.items():
        try:
            rows = con.execute(sql, [epoch]).fetchall()
        except duckdb.BinderException:  # a ledger read before its migration (read-only): it has no such column
            continue
        if rows:
            tables[name] = rows
    return digest(tables)


def columns_digest(tables: dict, version: int = 2) -> str:
    """The digest of Arrow tables in a fixed binary form (results versions 2, 3 and 4).

    Per table, in the given order: its name and row count, then per column its name, Arrow type and validity (one bit
    per row), then its values: integers and floats as little-endian 8-byte words (nulls as 0); strings as 8-byte
    offsets from 0 and their UTF-8 bytes (nulls as ""); anything else as the canonical JSON of its values. Every
    field is length-prefixed, so no two different sets of rows hash the same bytes. Version 2 feeds all of it to one
    BLAKE2b-256; version 3 hashes each column's fields with SHA-256 and puts the column digests in their place;
    version 4 is version 3 under its own domain (its tables differ: `result_queries`).
    """
    if version == 2:
        h = hashlib.blake2b(V2_DOMAIN, digest_size=32)
        for name, table in tables.items():
            for part in _table_head(name, table):
                _put(h, part)
            for field, chunked in zip(table.schema, table.columns):
                for part in _column_parts(field, chunked):
                    _put(h, part)
        return h.hexdigest()
    assert version in (3, 4), version
    columns = [(field, chunked) for table in tables.values() for field, chunked in zip(table.schema, table.columns)]
    # hashlib and NumPy let go of the GIL on large buffers: the columns hash side by side.
    big = sum(len(c) for _, c in columns) > PARALLEL_HASH_MIN_VALUES
    with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 1) if big else 1) as pool:
        digests = iter(pool.map(lambda fc: _column_digest_v3(*fc), columns))
    h = hashlib.sha256(V3_DOMAIN if version == 3 else V4_DOMAIN)
    for name, table in tables.items():
        for part in _table_head(name, table):
            _put(h, part)
        for _ in range(table.num_columns):
            _put(h, next(digests))
    return h.hexdigest()


PARALLEL_HASH_MIN_VALUES = 100_000  # below this, threads cost more than they save


def _put(h, data) -> None:
    view = memoryview(data).cast("B")
    h.update(len(view).to_bytes(8, "little"))
    h.update(view)


def _table_head(name: str, table) -> tuple[bytes, bytes]:
    return name.encode(), table.num_rows.to_bytes(8, "little")


def _column_digest_v3(field, chunked) -> bytes:
    h = hashlib.sha256()
    for part in _column_parts(field, chunked):
        _put(h, part)
    return h.digest()


def _column_parts(field, chunked):
    """One column's fields in the binary form both columnar versions hash: name, type, validity, values."""
    import numpy as np
    import pyarrow as pa

    col = chunked.combine_chunks() if isinstance(chunked, pa.ChunkedArray) else chunked
    n, nulls = len(col), col.null_count
    yield field.name.encode()
    yield str(field.type).encode()
    yield _all_valid_bits(n) if nulls == 0 else np.packbits(col.is_valid().to_numpy(zero_copy_only=False))
    t = field.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        values = col.fill_null(0) if nulls else col
        yield np.asarray(values.to_numpy(zero_copy_only=False), dtype="<f8" if pa.types.is_floating(t) else "<i8")
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        if n == 0:
            yield b""
            yield b""
            return
        text = col.fill_null("") if nulls else col
        _, offsets_buf, data_buf = text.buffers()
        width = "<i8" if pa.types.is_large_string(t) else "<i4"
        offsets = np.frombuffer(offsets_buf, dtype=width)[text.offset:text.offset + n + 1].astype("<i8")
        yield offsets - offsets[0]
        yield memoryview(data_buf)[int(offsets[0]):int(offsets[-1])] if data_buf is not None else b""
    else:
        yield canonical_json(col.to_pylist())


def _all_valid_bits(n: int) -> bytes:
    """np.packbits of n True values (most significant bit first), without making them."""
    whole, rest = divmod(n, 8)
    return b"\xff" * whole + (bytes([(0xFF << (8 - rest)) & 0xFF]) if rest else b"")
