"""What ingest accepted and quarantined, recorded as it happens; statuses are finalized at settlement."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class ContributionRecord:
    submission_id: str
    epoch: int
    account_id: str | None
    public_key: str | None
    task: str | None
    kind: str | None
    rows: int | None
    status: str  # accepted | quarantined
    reason: str | None
    digest: str | None
    nonce: int | None
    file: str
    received_at: str
    lake_path: str | None = None
    detail: str | None = None  # for quarantined ones: the human-readable reason
    arrival: int | None = None  # ingest's own arrival number: the order submissions came in
    verified: bool = False  # the manifest's Ed25519 signature verified: only then is its key or nonce believed
    suspicious: str | None = None  # comma-separated columns far outside the task's learned profile


_COLUMNS = ("submission_id, epoch, account_id, task, kind, rows, status, reason, digest, public_key, nonce, file, "
            "received_at, lake_path, arrival, verified, suspicious")
_SELECTED = _COLUMNS.replace("received_at", "CAST(received_at AS TIMESTAMP)")  # ISO text, cast as binding it would


def record(con: duckdb.DuckDBPyConnection, records: list[ContributionRecord]) -> int:
    """Insert ingest outcomes (and a quarantine row for each reject) in one statement per table, from Arrow; a
    submission id already recorded is skipped.

    Ids are unique per decision (docs/PROTOCOL.md §4), so a skip only happens when an interrupted run is redone.
    """
    import pyarrow as pa

    from ledger.db import arrow_table, registered

    if not records:
        return 0
    ids = [r.submission_id for r in records]
    with registered(con, "_record_ids", arrow_table({"submission_id": (pa.string(), ids)})) as view:
        done = {i for (i,) in con.execute(f"SELECT submission_id FROM contributions JOIN {view} USING (submission_id)"
                                          ).fetchall()}
    new = [r for r in records if r.submission_id not in done]
    if not new:
        return 0
    text, big, flag = pa.string(), pa.int64(), pa.bool_()
    columns = {name: (t, [getattr(r, name) for r in new]) for name, t in (
        ("submission_id", text), ("epoch", big), ("account_id", text), ("task", text), ("kind", text), ("rows", big),
        ("status", text), ("reason", text), ("digest", text), ("public_key", text), ("nonce", big), ("file", text),
        ("received_at", text), ("lake_path", text), ("arrival", big), ("verified", flag), ("suspicious", text),
        ("detail", text))}
    with registered(con, "_record_rows", arrow_table(columns)) as view:
        con.execute(f"INSERT INTO contributions ({_COLUMNS}) SELECT {_SELECTED} FROM {view}")
        con.execute("INSERT INTO quarantine (submission_id, epoch, account_id, file, reason, detail, received_at, "
                    "arrival) SELECT submission_id, epoch, account_id, file, reason, COALESCE(detail, reason), "
                    f"CAST(received_at AS TIMESTAMP), arrival FROM {view} WHERE status = 'quarantined'")
    return len(new)


def last_nonces(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """The highest nonce each key has used in a submission whose signature verified (nothing else is believed)."""
    rows = con.execute(
        "SELECT public_key, max(nonce) FROM contributions WHERE verified AND nonce IS NOT NULL GROUP BY public_key"
    ).fetchall()
    return {k: int(n) for k, n in rows}


@dataclass(frozen=True)
class AcceptedSubmission:
    """An accepted submission as landed in the lake."""

    submission_id: str
    account_id: str
    task: str
    rows: int
    lake_path: str  # relative to the home


def accepted(con: duckdb.DuckDBPyConnection, epoch: int, kind: str) -> list[AcceptedSubmission]:
    """An epoch's accepted (or duplicate) submissions of one kind, in arrival order."""
    rows = con.execute(
        "SELECT submission_id, account_id, task, rows, lake_path FROM contributions "
        "WHERE epoch = ? AND kind = ? AND status <> 'quarantined' ORDER BY arrival NULLS FIRST, received_at, "
        "submission_id",
        [epoch, kind],
    ).fetchall()
    return [AcceptedSubmission(*r) for r in rows]


def accepted_before(con: duckdb.DuckDBPyConnection, epoch: int, kind: str, task: str) -> list[AcceptedSubmission]:
    """A task's accepted submissions of every epoch before `epoch`, first arrivals first: what the lake already holds.

    Only what the ledger recorded counts: a lake file written by an interrupted run that never recorded it does not.
    """
    rows = con.execute(
        "SELECT submission_id, account_id, task, rows, lake_path FROM contributions "
        "WHERE epoch < ? AND kind = ? AND task = ? AND status <> 'quarantined' "
        "ORDER BY epoch, arrival NULLS FIRST, received_at, submission_id",
        [epoch, kind, task],
    ).fetchall()
    return [AcceptedSubmission(*r) for r in rows]


def record_commitments(con: duckdb.DuckDBPyConnection, rows: list[tuple[int, str, str, str]]) -> None:
    """Store accepted weight commitments: (epoch, validator account, commitment hash, submission id)."""
    for epoch, validator, commitment, submission_id in rows:
        con.execute("INSERT INTO commitments VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [epoch, validator, commitment, submission_id])


def open_commitments(con: duckdb.DuckDBPyConnection, epoch: int, reveal_epochs: int) -> dict[tuple[str, int], str]:
    """(validator public key, commit epoch) -> hash for commitments that may still be revealed in `epoch`.

    A key's later commitment in the same epoch replaces its earlier one; older ones have expired.
    """
    rows = con.execute(
        "SELECT a.public_key, c.epoch, c.commitment FROM commitments c JOIN accounts a ON a.account_id = c.validator "
        "JOIN contributions s ON s.submission_id = c.submission_id "
        "WHERE c.epoch >= ? AND c.epoch < ? ORDER BY s.arrival NULLS FIRST, s.received_at, c.submission_id",
        [epoch - reveal_epochs, epoch],
    ).fetchall()
    return {(key, e): h for key, e, h in rows}


def dataset_statuses(con: duckdb.DuckDBPyConnection, epoch: int) -> list[tuple[str, str]]:
    """(file, status) of an epoch's dataset submissions, in arrival order."""
    return con.execute("SELECT file, status FROM contributions WHERE epoch = ? AND kind = 'dataset' "
                       "ORDER BY arrival", [epoch]).fetchall()


def landed_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str, int, int]]:
    """(epoch, account_id, rows, duplicate_rows) of the dataset submissions not quarantined, per epoch and account."""
    return con.execute(
        "SELECT epoch, account_id, "
        "COALESCE(SUM(rows) FILTER (WHERE status <> 'quarantined'), 0), "
        "COALESCE(SUM(duplicate_rows) FILTER (WHERE status <> 'quarantined'), 0) "
        "FROM contributions WHERE kind = 'dataset' AND account_id IS NOT NULL GROUP BY epoch, account_id"
    ).fetchall()
