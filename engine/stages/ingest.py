"""Stage 1: the Beam ingest of drop/ into the open epoch, recorded in the ledger; the lake as landed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from ledger import accounts, arrivals, contributions
from ledger.contributions import AcceptedSubmission, ContributionRecord
from ledger.requests import Registration, Request, apply_requests
from ledger.db import open_ledger, transaction
from ledger.epochs import advance, current_epoch, epoch_state
from ledger.errors import EpochOrderError
from quality.task import Task
from quality.task_toml import load_tasks
from pipelines.errors import IngestError
from engine import failpoints
from engine.home import Home, utcnow
from engine.lock import epoch_lock
from engine.parameters import closed_tasks, settings_at

if TYPE_CHECKING:
    from pipelines.records import Registry


@dataclass(frozen=True)
class IngestSummary:
    epoch: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    rows: int
    waiting: int = 0
    suspicious: int = 0
    data_docs: tuple[str, ...] = ()  # the epoch's Great Expectations Data Docs (index.html per kind and task)


def ingest(home: Home, epoch: int | None = None) -> IngestSummary:
    """Ingest drop/ into the open epoch: stamp arrivals, decide with the Beam pipeline, record, then move files.

    Every step is idempotent: a run killed at any point and run again ends as if it had never been interrupted.
    Held under the home's epoch lock: ingest is the epoch's one writer while it runs. With `epoch`, that epoch must be
    the open one (a Dagster partition names the epoch it writes): anything else raises EpochOrderError.
    """
    with epoch_lock(home, "ingest"):
        if epoch is not None:
            with open_ledger(home.paths.ledger, read_only=True) as con:
                open_now = current_epoch(con)
            if open_now != epoch:
                raise EpochOrderError(f"epoch {epoch} is not the open epoch (epoch {open_now} is): ingest lands "
                                      "submissions in the open epoch only")
        return _ingest(home)


def _ingest(home: Home) -> IngestSummary:
    from pipelines.drop import display_name, scan_drop  # Beam is imported only when ingest runs
    from pipelines.ingest import run_ingest
    from pipelines.records import Sighting, iso

    paths = home.paths
    tasks = load_tasks(paths.tasks)  # a broken task file is the operator's error, said on every run
    now = utcnow()
    scan = scan_drop(str(paths.drop))
    idle = _idle_epoch(home) if not scan.entries else None
    if idle is not None:
        return IngestSummary(idle, 0, 0, {}, 0)
    # New names are numbered in the order the kernel last changed them (ctime: a sender cannot backdate it).
    entries = sorted(scan.entries, key=lambda e: (e.changed_ns, e.name))
    with open_ledger(paths.ledger) as con:  # one open for the check and the sighting (each open starts DuckDB)
        epoch = current_epoch(con)
        pinned = epoch_state(con, epoch) == "scored"
        pending = arrivals.pending_moves(con) if pinned else []
        if not pinned:
            with transaction(con):
                epoch, seen, registry = _sight(home, con, tasks, entries, now)
    if pinned:  # a close was interrupted after pinning this epoch: decide nothing new, only finish the moves
        real = {(display_name(e.name), e.identity): e.name for e in entries}
        _move_decided(home, pending, real)
        return IngestSummary(epoch, 0, 0, {}, 0, len(scan.manifests))
    failpoints.reach("ingest.sighted")
    _clear_staging(home)
    stale_before = now - timedelta(seconds=home.settings.incomplete_after_seconds)
    undecided = {name: a for name, a in seen.items() if a.destination is None}
    sightings = {name: Sighting(a.arrival, iso(a.first_seen_at), a.first_seen_at <= stale_before)
                 for name, a in undecided.items()}
    result = run_ingest(
        drop=str(paths.drop), lake=str(paths.lake), staging=str(paths.staging), epoch=epoch, registry=registry,
        scan=_only(scan, undecided), sightings=sightings, max_payload_bytes=home.settings.max_payload_bytes,
        docs_dir=str(paths.docs / f"epoch={epoch}"), pipeline_args=list(home.settings.beam_pipeline_args),
    )
    failpoints.reach("ingest.decided")
    commits = [(epoch, a.account_id, _commitment_of(home.path_of(a.lake_path)), a.submission_id)
               for a in result.accepted if a.kind == "weights"]
    requests = [_request_of(home, a) for a in result.accepted if a.kind == "request"]
    with open_ledger(paths.ledger) as con, transaction(con):
        # Re-checked inside the recording transaction: a record can never land in an epoch pinned or settled
        # meanwhile (a writer that did not hold the epoch lock).
        if current_epoch(con) != epoch or epoch_state(con, epoch) not in ("open", "ingesting"):
            raise IngestError(f"epoch {epoch} was closed while ingest ran; nothing was recorded or moved, "
                              "run ingest again")
        advance(con, epoch, "ingesting")
        # Requests move tokens in this same transaction; one the balance cannot cover is quarantined instead.
        in_force = settings_at(home, epoch, con)
        refused = apply_requests(con, epoch, requests, tasks=list(tasks),
                                 cooldown_epochs=in_force.unstake_cooldown_epochs,
                                 registration=Registration(open=home.settings.registration == "open",
                                                           fee_units=in_force.registration_fee_units,
                                                           pow_bits=in_force.registration_pow_bits))
        # An applied register request came from a key with no account yet: its record carries the new account's id.
        accepted = [a if a.account_id else replace(a, account_id=accounts.account_id_for(a.public_key))
                    for a in result.accepted if a.submission_id not in refused]
        rejected = [*result.rejected, *(_refused(a, *refused[a.submission_id]) for a in result.accepted
                                        if a.submission_id in refused)]
        records = [_accepted_record(a, epoch, paths.root) for a in accepted]
        records += [_rejected_record(r, epoch) for r in rejected]
        decisions = [(seen[name].arrival, a.submission_id, "archive", epoch) for a in accepted for name in a.files
                     if name in seen]
        decisions += [(seen[name].arrival, r.submission_id, "quarantine", epoch) for r in rejected
                      for name in r.files if name in seen]
        contributions.record(con, records)
        contributions.record_commitments(con, [c for c in commits if c[2] is not None])
        arrivals.decide(con, decisions)
        pending = arrivals.pending_moves(con)
    failpoints.reach("ingest.recorded")
    real = {(display_name(e.name), e.identity): e.name for e in entries}
    _move_decided(home, pending, real)
    reasons: dict[str, int] = {}
    for r in rejected:
        reasons[r.reason] = reasons.get(r.reason, 0) + 1
    docs = tuple(sorted(str(p) for p in (paths.docs / f"epoch={epoch}").glob("*/index.html")))
    return IngestSummary(epoch, len(accepted), len(rejected), reasons,
                         sum(a.rows for a in accepted if a.kind != "request"), len(result.waiting),
                         sum(1 for a in accepted if a.suspicious), docs)


def _idle_epoch(home: Home) -> int | None:
    """drop/ is empty: when no decided name still waits to be moved and the open epoch takes submissions, an ingest
    run only marks the epoch as ingesting (one writer open: no keys, nonces or commitments are read, no pipeline
    built) and clears what an interrupted run left in staging/; returns that epoch, or None when the full path must
    run (it clears staging/ itself)."""
    with open_ledger(home.paths.ledger) as con, transaction(con):
        epoch = current_epoch(con)
        if epoch_state(con, epoch) not in ("open", "ingesting") or arrivals.pending_moves(con):
            return None
        advance(con, epoch, "ingesting")
    _clear_staging(home)
    return epoch


def _sight(home: Home, con, tasks: dict[str, Task], entries: list, now) -> tuple[int, dict, Registry]:
    """Stamp every name in drop/ with its arrival (inside the caller's transaction) and read what deciding needs:
    the open epoch, the real name -> arrival, and the registry of keys, nonces, tasks and commitments."""
    from pipelines.drop import display_name
    from pipelines.records import Registry

    epoch = current_epoch(con)
    stamped = arrivals.sight(con, [arrivals.Seen(display_name(e.name), e.identity) for e in entries],
                             now=now, epoch=epoch)
    seen = {e.name: a for e, a in zip(entries, stamped)}  # the real name (which may not be UTF-8) -> arrival
    registry = Registry(
        accounts={a.public_key: (a.account_id, a.role) for a in accounts.all_accounts(con) if a.public_key},
        last_nonce=contributions.last_nonces(con),
        tasks=tasks,
        challenge_ids={name: tuple(_challenge(home, t).column("row_id").to_pylist())
                       for name, t in tasks.items() if t.challenge},
        commit_reveal=home.settings.commit_reveal,
        reveal_epochs=home.settings.reveal_epochs,
        commitments=contributions.open_commitments(con, epoch, home.settings.reveal_epochs),
        closed_tasks=closed_tasks(home, epoch, list(tasks), con),
    )
    return epoch, seen, registry


def _request_of(home: Home, a) -> Request:
    """An accepted request's landed row, as the ledger applies it."""
    from pipelines.requests import REQUEST_SCHEMA

    table = pq.read_table(home.path_of(a.lake_path))
    row = {name: table.column(name)[0].as_py() if name in table.column_names else None for name in REQUEST_SCHEMA.names}
    return Request(a.submission_id, a.account_id, a.arrival, a.file, row["action"], row["amount_units"], row["to"],
                   row["enabled"], row["setting"], row["value"], row["proposal_id"], row["vote"],
                   public_key=a.public_key, role=row["role"], name=row["name"], pow_epoch=row["pow_epoch"],
                   pow_nonce=row["pow_nonce"])


def _refused(a, reason: str, detail: str):
    """An accepted request the books could not apply, as a reject: quarantined with its reason, its nonce used."""
    from pipelines.records import Rejected

    return Rejected(submission_id=a.submission_id, arrival=a.arrival, account_id=a.account_id or None,
                    public_key=a.public_key, kind=a.kind, task=a.task, nonce=a.nonce, digest=a.digest, verified=True,
                    file=a.file, files=a.files, reason=reason, detail=detail, received_at=a.received_at)


def _clear_staging(home: Home) -> None:
    """Remove what an interrupted run left in staging/ (ingest is the epoch's one writer, so nothing else uses it)."""
    from pipelines import storage

    for e in storage.list_folder(str(home.paths.staging)):
        storage.delete(str(home.paths.staging / e.name))


def _only(scan, names: dict):
    """The scan restricted to names not yet decided (a decided name waits only to be moved)."""
    import dataclasses

    keep = lambda es: tuple(e for e in es if e.name in names)  # noqa: E731
    return dataclasses.replace(scan, entries=keep(scan.entries), manifests=keep(scan.manifests),
                               loose=keep(scan.loose), in_progress=keep(scan.in_progress),
                               not_regular=keep(scan.not_regular), bad_names=keep(scan.bad_names))


def _move_decided(home: Home, pending: list, real: dict) -> None:
    """Move every decided name still in drop/ to archive/ or quarantine/ of its epoch, then mark it gone.

    `real` maps (name as recorded, identity) to the name on disk; a decided name no longer listed has already left.
    """
    from pipelines.drop import move_files

    paths = home.paths
    groups: dict[tuple[str, int], list] = {}
    for a in pending:
        groups.setdefault((a.destination, a.decided_epoch), []).append(a)
    for (destination, epoch), group in sorted(groups.items()):
        root = paths.archive if destination == "archive" else paths.quarantine
        for a in group:
            if (a.name, a.identity) in real:
                move_files(str(paths.drop), str(root / f"epoch={epoch}"), [real[(a.name, a.identity)]])
            failpoints.reach("ingest.moved_one")
    failpoints.reach("ingest.moved")
    if pending:
        with open_ledger(paths.ledger) as con, transaction(con):
            arrivals.left(con, [a.arrival for a in pending], now=utcnow())


def _accepted_record(a, epoch: int, root: Path) -> ContributionRecord:
    return ContributionRecord(
        submission_id=a.submission_id, epoch=epoch, account_id=a.account_id, public_key=a.public_key, task=a.task,
        kind=a.kind, rows=a.rows, status="accepted", reason=None, digest=a.digest, nonce=a.nonce, file=a.file,
        received_at=a.received_at, lake_path=_relative(a.lake_path, root), arrival=a.arrival, verified=True,
        suspicious=",".join(a.suspicious) or None,
    )


def _rejected_record(r, epoch: int) -> ContributionRecord:
    return ContributionRecord(
        submission_id=r.submission_id, epoch=epoch, account_id=r.account_id, public_key=r.public_key, task=r.task,
        kind=r.kind, rows=None, status="quarantined", reason=r.reason, digest=r.digest, nonce=r.nonce, file=r.file,
        received_at=r.received_at, detail=r.detail, arrival=r.arrival, verified=r.verified,
    )


def _commitment_of(lake_file: Path) -> str | None:
    """The hash in a landed weight file if it is a commitment, else None."""
    table = pq.read_table(lake_file, columns=["mode", "commitment"])
    return table.column("commitment")[0].as_py() if table.column("mode")[0].as_py() == "commit" else None


def _challenge(home: Home, task: Task) -> pa.Table:
    return pq.read_table(home.path_of(task.challenge))


def _relative(path: str, root: Path) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_absolute() and p.is_relative_to(root) else str(p)


@dataclass(frozen=True)
class LakeSnapshot:
    """What an epoch's settlement is computed from, read once: its accepted submissions as they sit in the lake
    (each kind in arrival order) and every account's stake at its start. The blocking quality check validates
    exactly this set, and scoring and consensus take it as their input instead of asking the ledger again."""

    epoch: int
    submissions: tuple[AcceptedSubmission, ...]  # datasets
    predictions: tuple[AcceptedSubmission, ...] = ()
    weights: tuple[AcceptedSubmission, ...] = ()
    validator_stakes: tuple[tuple[str, int], ...] = ()  # (account_id, staked units at the epoch's start)
    contributor_stakes: tuple[tuple[str, int], ...] = ()  # the same for contributors: weights their predictions


def lake_snapshot(home: Home, epoch: int) -> LakeSnapshot:
    """The epoch's landed submissions and the stakes at its start, in one read of the ledger."""
    from ledger import transfers

    with open_ledger(home.paths.ledger, read_only=True) as con:
        return LakeSnapshot(epoch, tuple(contributions.accepted(con, epoch, "dataset")),
                            tuple(contributions.accepted(con, epoch, "predictions")),
                            tuple(contributions.accepted(con, epoch, "weights")),
                            tuple(sorted(transfers.stakes_at_epoch_start(con, epoch).items())),
                            tuple(sorted(transfers.stakes_at_epoch_start(con, epoch, role="contributor").items())))


def revalidate(home: Home, snapshot: LakeSnapshot) -> list[tuple[str, object]]:
    """Run each task's suite again over what landed (one GX validation per task): (submission_id, quality Report)."""
    from pipelines.lake import read_lake_file
    from quality.gate import gate
    from quality.statistics import submission_stats

    tasks = load_tasks(home.paths.tasks)
    reports = []
    for task_name in sorted({s.task for s in snapshot.submissions}):
        task = tasks[task_name]
        subs = [s for s in snapshot.submissions if s.task == task_name]
        stats = [submission_stats(read_lake_file(home.path_of(s.lake_path), task.columns()), task, s.submission_id)
                 for s in subs]
        by_id = gate(stats, task)
        reports += [(s.submission_id, by_id[s.submission_id]) for s in subs]
    return reports
