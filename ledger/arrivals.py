"""Ingest's own record of what it saw in drop/: a state machine per name, seen → decided → left.

File times are the sender's to choose, so arrival order is a sequence number stamped here, when ingest first lists
a name. A decision is committed (with the contribution row) before its files move; a rerun after a crash moves what
was decided and still sits in drop/, and never decides a name twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb


@dataclass(frozen=True)
class Seen:
    """A name in drop/ as listed: what `sight` needs (pipelines.storage.Entry fits)."""

    name: str
    identity: str


@dataclass(frozen=True)
class Arrival:
    arrival: int
    name: str
    identity: str
    first_seen_at: datetime
    submission_id: str | None
    destination: str | None     # archive | quarantine once decided
    decided_epoch: int | None


def sight(con: duckdb.DuckDBPyConnection, entries: Sequence[Seen], *, now: datetime, epoch: int) -> list[Arrival]:
    """Stamp every name not seen before (in listing order) and return the live arrival of each, in that order.

    A live arrival whose file is no longer listed has left drop/ (moved by an interrupted run, or taken back by its
    sender): it is closed, so a later file under the same name is a new arrival.
    """
    live = {(a.name, a.identity): a for a in _live(con)}
    listed = {(e.name, e.identity) for e in entries}
    for key, a in live.items():
        if key not in listed:
            con.execute("UPDATE arrivals SET left_at = ? WHERE arrival = ?", [now, a.arrival])
    new = [e for e in entries if (e.name, e.identity) not in live]
    if new:
        # One statement for every new name (a drop of hundreds of files costs one round trip, not two per file);
        # numbers come from the sequence in listing order.
        import pyarrow as pa

        from ledger.db import arrow_table, registered

        (first,) = con.execute("SELECT nextval('arrival_seq')").fetchone()
        if len(new) > 1:  # reserve the rest of the block: the sequence stays the one source of arrival numbers
            con.execute("SELECT nextval('arrival_seq') FROM range(?)", [len(new) - 1]).fetchall()
        numbers = range(int(first), int(first) + len(new))
        data = arrow_table({"arrival": (pa.int64(), list(numbers)), "name": (pa.string(), [e.name for e in new]),
                            "identity": (pa.string(), [e.identity for e in new])})
        with registered(con, "_sighted", data) as view:
            con.execute(f"INSERT INTO arrivals (arrival, name, identity, first_seen_at, epoch) "
                        f"SELECT arrival, name, identity, ?, ? FROM {view} ORDER BY arrival", [now, epoch])
        for n, e in zip(numbers, new):
            live[(e.name, e.identity)] = Arrival(n, e.name, e.identity, now, None, None, None)
    return [live[(e.name, e.identity)] for e in entries]


def _live(con: duckdb.DuckDBPyConnection) -> list[Arrival]:
    rows = con.execute(
        "SELECT arrival, name, identity, first_seen_at, submission_id, destination, decided_epoch FROM arrivals "
        "WHERE left_at IS NULL ORDER BY arrival"
    ).fetchall()
    return [Arrival(*r) for r in rows]


def decide(con: duckdb.DuckDBPyConnection, decisions: Iterable[tuple[int, str, str, int]]) -> None:
    """(arrival, submission_id, destination, epoch) for each name a decision covers; a decided name stays decided."""
    import pyarrow as pa

    from ledger.db import arrow_table, registered

    rows = list(decisions)
    if not rows:
        return
    data = arrow_table({name: (t, [r[i] for r in rows]) for i, (name, t) in enumerate((
        ("arrival", pa.int64()), ("submission_id", pa.string()), ("destination", pa.string()), ("epoch", pa.int64())))})
    with registered(con, "_decisions", data) as view:  # one statement, from Arrow
        con.execute(f"UPDATE arrivals SET submission_id = d.submission_id, destination = d.destination, "
                    f"decided_epoch = d.epoch FROM {view} d WHERE arrivals.arrival = d.arrival "
                    "AND arrivals.submission_id IS NULL")


def pending_moves(con: duckdb.DuckDBPyConnection) -> list[Arrival]:
    """Decided names still in drop/ as far as the ledger knows: to move, in arrival order."""
    return [a for a in _live(con) if a.destination is not None]


def left(con: duckdb.DuckDBPyConnection, arrivals: Iterable[int], *, now: datetime) -> None:
    """Mark names as gone from drop/."""
    import pyarrow as pa

    from ledger.db import arrow_table, registered

    gone = list(arrivals)
    if not gone:
        return
    with registered(con, "_gone", arrow_table({"arrival": (pa.int64(), gone)})) as view:
        con.execute(f"UPDATE arrivals SET left_at = ? FROM {view} g WHERE arrivals.arrival = g.arrival "
                    "AND arrivals.left_at IS NULL", [now])


def names_in_order(con: duckdb.DuckDBPyConnection, epoch: int) -> list[str]:
    """The names ingest listed in `epoch`, in arrival order."""
    return [name for (name,) in con.execute("SELECT name FROM arrivals WHERE epoch = ? ORDER BY arrival",
                                            [epoch]).fetchall()]
