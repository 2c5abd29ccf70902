"""Epoch bookkeeping: which epoch is open, and the rows of the hash chain."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from ledger.errors import EpochOrderError, LedgerError


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    starts_at: datetime
    ends_at: datetime | None
    settled_at: datetime | None
    inputs_digest: str | None
    results_digest: str | None
    prev_hash: str | None
    hash: str | None
    emission: int | None


def open_epoch(con: duckdb.DuckDBPyConnection, epoch: int, starts_at: datetime) -> None:
    """Record that an epoch has started (idempotent)."""
    con.execute("INSERT INTO epochs (epoch, starts_at, state) VALUES (?, ?, 'open') ON CONFLICT DO NOTHING",
                [epoch, starts_at])


def current_epoch(con: duckdb.DuckDBPyConnection) -> int:
    """The open epoch: the lowest one not yet settled."""
    row = con.execute("SELECT min(epoch) FROM epochs WHERE settled_at IS NULL").fetchone()
    if row[0] is None:
        raise LedgerError("the ledger has no open epoch; was the home set up? (`tributary` sets it up on first use)")
    return int(row[0])


def get_epoch(con: duckdb.DuckDBPyConnection, epoch: int) -> EpochRow | None:
    """One row of the epochs table."""
    row = con.execute(
        "SELECT epoch, starts_at, ends_at, settled_at, inputs_digest, results_digest, prev_hash, hash, emission "
        "FROM epochs WHERE epoch = ?",
        [epoch],
    ).fetchone()
    return EpochRow(*row) if row else None


def settled_epochs(con: duckdb.DuckDBPyConnection) -> list[EpochRow]:
    """Every settled epoch, in order."""
    rows = con.execute(
        "SELECT epoch, starts_at, ends_at, settled_at, inputs_digest, results_digest, prev_hash, hash, emission "
        "FROM epochs WHERE settled_at IS NOT NULL ORDER BY epoch"
    ).fetchall()
    return [EpochRow(*r) for r in rows]


def last_hash(con: duckdb.DuckDBPyConnection, before_epoch: int) -> str | None:
    """The chain hash of the latest settled epoch before `before_epoch`."""
    row = con.execute(
        "SELECT hash FROM epochs WHERE settled_at IS NOT NULL AND epoch < ? ORDER BY epoch DESC LIMIT 1", [before_epoch]
    ).fetchone()
    return row[0] if row else None


# Forward-only: an epoch is open (nothing recorded yet), ingesting (records landing), scored (its set of
# submissions pinned for settlement: nothing more lands in it), then settled.
TRANSITIONS = {"open": ("ingesting", "scored"), "ingesting": ("scored",), "scored": ("settled",), "settled": ()}


def epoch_state(con: duckdb.DuckDBPyConnection, epoch: int) -> str:
    """The state of one epoch (a ledger from before states: derived from settled_at)."""
    row = con.execute("SELECT state, settled_at FROM epochs WHERE epoch = ?", [epoch]).fetchone()
    if row is None:
        raise LedgerError(f"epoch {epoch} does not exist")
    return row[0] or ("settled" if row[1] is not None else "open")


def advance(con: duckdb.DuckDBPyConnection, epoch: int, to: str) -> None:
    """Move an epoch forward to `to`; already there is a no-op, anything backward or skipping is EpochOrderError."""
    now = epoch_state(con, epoch)
    if now == to:
        return
    if to not in TRANSITIONS[now]:
        raise EpochOrderError(f"epoch {epoch} is {now}; it cannot become {to} (epochs only move forward: "
                              "open → ingesting → scored → settled)")
    con.execute("UPDATE epochs SET state = ? WHERE epoch = ?", [to, epoch])
