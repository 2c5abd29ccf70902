"""The results digest of an epoch: recomputed from the tables, by settlement and by the audit alike.

Two versions, chosen per epoch by `epochs.results_version` (NULL: 1), so every settled epoch recomputes as it was:
- 1: BLAKE2b of the canonical JSON of every row (Python objects; ~10 s for an epoch paying 1M accounts);
- 2: BLAKE2b over the same rows as Arrow columns, each in a fixed binary form (`columns_digest`; under 1 s at 1M).
"""

from __future__ import annotations

import hashlib

import duckdb

from ledger.db import complete_pending
from ledger.digest import canonical_json, digest

RESULTS_VERSION = 2  # what settlement writes now
V2_DOMAIN = b"tributary results v2\n"

# Each query lists an epoch's rows in a fixed order; timestamps are left out so replays hash equal.
RESULT_QUERIES = {
    "rewards": "SELECT account_id, role, value, model_score, weight, consensus, incentive, dividends, amount, stake, "
               "validator_trust "
               "FROM rewards WHERE epoch = ? ORDER BY account_id",
    "transfers": "SELECT id, debit_account, debit_bucket, credit_account, credit_bucket, amount, kind, memo "
                 "FROM transfers WHERE epoch = ? ORDER BY id",
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


def results_digest(con: duckdb.DuckDBPyConnection, epoch: int, version: int | None = None) -> str:
    """BLAKE2b of every row an epoch's settlement produced or confirmed, in the epoch's results version
    (None: the version the epoch was settled with)."""
    version = settled_version(con, epoch) if version is None else version
    if version == 1:
        return _digest_v1(con, epoch)
    if version == 2:
        complete_pending(con)
        tables = {name: con.sql(sql, params=[epoch]).to_arrow_table()
                  for name, sql in {**RESULT_QUERIES, **LATER_RESULT_QUERIES}.items()}
        return columns_digest(tables)
    raise ValueError(f"epoch {epoch}: unknown results_version {version}; this Tributary knows versions 1 and 2")


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


def columns_digest(tables: dict) -> str:
    """BLAKE2b-256 of Arrow tables in a fixed binary form (results version 2).

    Per table, in the given order: its name and row count, then per column its name, Arrow type and validity (one bit
    per row), then its values: integers and floats as little-endian 8-byte words (nulls as 0); strings as 8-byte
    offsets from 0 and their UTF-8 bytes (nulls as ""); anything else as the canonical JSON of its values. Every
    field is length-prefixed, so no two different sets of rows hash the same bytes.
    """
    import numpy as np
    import pyarrow as pa

    h = hashlib.blake2b(V2_DOMAIN, digest_size=32)

    def put(data) -> None:
        view = memoryview(data).cast("B")
        h.update(len(view).to_bytes(8, "little"))
        h.update(view)

    for name, table in tables.items():
        put(name.encode())
        put(table.num_rows.to_bytes(8, "little"))
        for field, chunked in zip(table.schema, table.columns):
            col = chunked.combine_chunks() if isinstance(chunked, pa.ChunkedArray) else chunked
            put(field.name.encode())
            put(str(field.type).encode())
            put(np.packbits(col.is_valid().to_numpy(zero_copy_only=False)).tobytes())
            t = field.type
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                word = "<f8" if pa.types.is_floating(t) else "<i8"
                put(np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), dtype=word).tobytes())
            elif pa.types.is_string(t) or pa.types.is_large_string(t):
                if len(col) == 0:
                    put(b"")
                    put(b"")
                    continue
                text = col.fill_null("").cast(pa.large_string())
                _, offsets_buf, data_buf = text.buffers()
                offsets = np.frombuffer(offsets_buf, dtype="<i8")[text.offset:text.offset + len(text) + 1]
                put((offsets - offsets[0]).tobytes())
                put(memoryview(data_buf)[int(offsets[0]):int(offsets[-1])] if data_buf is not None else b"")
            else:
                put(canonical_json(col.to_pylist()))
    return h.hexdigest()
