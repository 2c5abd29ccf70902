"""Epoch ingest (DESIGN 4.2, docs/PROTOCOL.md): verify what strangers put in drop/, land what passes in the lake.

The Beam graph, one coarse element per submission; every stage sends rejects to a `rejected` side output:

    Parse+Signature ─► Admit (key, task, kind, payload) ─► CheckNonces ─► Decode (cast, stats, stage)
        ─► Gate (one Great Expectations run per task) ─► WriteLake ─┐
     rejected / waiting from every stage ───────────────────────────┴─► WriteResults (JSON lines)

The signature is checked first, over the manifest alone: nothing from a manifest that does not verify is believed.
The driver never moves a file: it returns each decision with the files it covers, the caller commits them to the
ledger and only then moves the files (`move_files`), so a crash at any point is repaired by a rerun.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import TaggedOutput

from pipelines import reasons as R
from pipelines import storage
from pipelines.errors import IngestError, ManifestError, SignatureError
from pipelines.lake import ROW_HASH_COLUMN, lake_path
from pipelines.manifest import MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, Manifest, parse_manifest, verify_signature
from pipelines.options import build_options, quiet_beam_logging
from pipelines.weights import WeightRules, WeightsRejected, parse_weights

REJECTED = "rejected"   # tag of every stage's side output for rejected submissions
WAITING = "waiting"     # tag for complete-looking submissions whose payload is not all there yet
ROLE_KINDS: Mapping[str, tuple[str, ...]] = {
    "contributor": ("dataset", "predictions", "request"),
    "validator": ("weights", "request"),
}
TABLE_KINDS = ("dataset", "predictions")   # kinds that name a task and carry a table
RESULTS_PREFIX = "results"
RESULTS_SUFFIX = ".jsonl"
STAGED_SUFFIX = ".staged.parquet"


@dataclass(frozen=True)
class Registry:
    """What ingest must know from the ledger and the task files, passed in (pipelines never imports ledger)."""

    accounts: Mapping[str, tuple[str, str]]   # public_key hex -> (account_id, role)
    last_nonce: Mapping[str, int]             # public_key hex -> highest nonce already used (absent: none)
    tasks: Mapping[str, Any]                  # name -> quality.task.Task
    challenge_ids: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # task -> its challenge row ids
    commit_reveal: bool = False               # weights must be committed in one epoch and revealed in a later one
    reveal_epochs: int = 1
    commitments: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (validator key, epoch) -> hash
    closed_tasks: frozenset[str] = frozenset()  # tasks a passed proposal closed: they take no new submissions


@dataclass(frozen=True)
class Sighting:
    """A name in drop/ as ingest first saw it: its arrival number and time on ingest's own clock."""

    arrival: int
    first_seen_at: str   # ISO-8601, UTC
    stale: bool          # first seen more than incomplete_after_seconds ago


@dataclass(frozen=True)
class Accepted:
    """A submission that passed every check and whose rows are in the lake."""

    submission_id: str
    arrival: int
    account_id: str
    public_key: str
    kind: str
    task: str
    digest: str
    nonce: int
    rows: int
    lake_path: str
    received_at: str
    file: str
    files: tuple[str, ...]          # the names in drop/ this decision covers (payload, manifest)
    suspicious: tuple[str, ...] = ()  # columns far outside the task's learned profile


@dataclass(frozen=True)
class Rejected:
    """A submission that failed a check; `detail` names the file, the field and the rule."""

    submission_id: str
    arrival: int
    account_id: str | None
    public_key: str | None
    kind: str | None
    task: str | None
    nonce: int | None
    digest: str | None
    verified: bool                  # the manifest's signature verified (only then is anything in it believed)
    file: str
    files: tuple[str, ...]
    reason: str
    detail: str
    received_at: str


@dataclass(frozen=True)
class IngestResult:
    """Everything one ingest run decided, each tuple in arrival order; `waiting` stays in drop/ for a later run."""

    epoch: int
    accepted: tuple[Accepted, ...]
    rejected: tuple[Rejected, ...]
    waiting: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------- the listing


@dataclass(frozen=True)
class DropScan:
    """drop/ as listed, sorted into what ingest does with each name."""

    entries: tuple[storage.Entry, ...]
    manifests: tuple[storage.Entry, ...]      # regular files named <payload>.manifest.json
    loose: tuple[storage.Entry, ...]          # regular files no listed manifest names (payload before its manifest)
    in_progress: tuple[storage.Entry, ...]    # regular dot-names: a writer's temporary files
    not_regular: tuple[storage.Entry, ...]    # links, FIFOs, devices, directories nobody's manifest names
    bad_names: tuple[storage.Entry, ...] = ()  # names that are not valid UTF-8: nothing can be recorded under them


def scan_drop(drop: str) -> DropScan:
    """List drop/ without opening or following anything."""
    listed = storage.list_folder(str(drop))
    bad_names = [e for e in listed if not _is_utf8(e.name)]
    entries = [e for e in listed if _is_utf8(e.name)]
    manifests = [e for e in entries if e.regular and not e.name.startswith(".") and e.name.endswith(MANIFEST_SUFFIX)
                 and e.name != MANIFEST_SUFFIX]
    # Each manifest's own name and its payload's: those are judged with the submission, not on their own.
    claimed = {m.name for m in manifests} | {m.name[: -len(MANIFEST_SUFFIX)] for m in manifests}
    loose, in_progress, not_regular = [], [], []
    for e in entries:
        if e.name in claimed:
            continue
        if not e.regular:
            not_regular.append(e)
        elif e.name.startswith("."):
            in_progress.append(e)
        else:
            loose.append(e)
    return DropScan(tuple(listed), tuple(manifests), tuple(loose), tuple(in_progress), tuple(not_regular),
                    tuple(bad_names))


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:   # os.scandir decodes undecodable bytes to lone surrogates
        return False
    return True


def display_name(name: str) -> str:
    """A listed name as text the ledger can store: undecodable bytes written as \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------------------------- elements


@dataclass(frozen=True)
class Listed:
    """A manifest found in drop/, with its sighting."""

    manifest_file: str
    arrival: int
    received_at: str
    stale: bool

    @property
    def payload_file(self) -> str:
        """The payload's name by convention: `<payload>.manifest.json`."""
        return self.manifest_file[: -len(MANIFEST_SUFFIX)]


@dataclass(frozen=True)
class Submission:
    """A manifest whose signature verified, on its way through the checks; account fields once the key is known."""

    listed: Listed
    manifest: Manifest
    account_id: str | None = None
    role: str | None = None

    @property
    def submission_id(self) -> str:
        """The id of a submission that used its nonce: full digest, key and nonce."""
        return submission_id(self.manifest.digest, self.manifest.public_key, self.manifest.nonce)


def submission_id(digest: str, public_key: str, nonce: int) -> str:
    """Unique per key and nonce, since a nonce is used once per key."""
    return f"{digest}-{public_key}-{nonce}"


def _record(status: str, obj: Any) -> dict:
    return {"status": status, **asdict(obj)}


def _rejected(sub: Submission, reason: str, detail: str, *, nonce_used: bool = False) -> dict:
    """The record of a rejected submission whose signature verified; its id is unique whether or not it used its nonce.

    Only a submission that passed the nonce check owns the bare id; every other verified rejection (a replay, or a
    rejection before the nonce check) is suffixed with its arrival, so two records never share an id.
    """
    m, listed = sub.manifest, sub.listed
    sid = sub.submission_id if nonce_used else f"{sub.submission_id}~{listed.arrival}"
    files = (listed.payload_file, listed.manifest_file)
    r = Rejected(submission_id=sid, arrival=listed.arrival, account_id=sub.account_id, public_key=m.public_key,
                 kind=m.kind, task=m.task, nonce=m.nonce, digest=m.digest, verified=True, file=listed.payload_file,
                 files=files, reason=reason, detail=detail, received_at=listed.received_at)
    return _record("rejected", r)


def unverified_record(name: str, files: Sequence[str], sighting: Sighting, reason: str, detail: str) -> dict:
    """The record of something nobody is proven to have sent: attributed to no account, using no nonce."""
    r = Rejected(submission_id=f"unverified-{sighting.arrival}", arrival=sighting.arrival, account_id=None,
                 public_key=None, kind=None, task=None, nonce=None, digest=None, verified=False, file=name,
                 files=tuple(files), reason=reason, detail=detail, received_at=sighting.first_seen_at)
    return _record("rejected", r)


def _waiting(listed: Listed) -> dict:
    return {"status": "waiting", "manifest_file": listed.manifest_file}


class _Reject(Exception):
    """Raised inside a stage to send the current submission to the rejected output."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Wait(Exception):
    """The payload is not all there yet."""


# ------------------------------------------------------------------------------------------------ helpers


def _feature_matrix(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    if not names:
        return np.zeros((table.num_rows, 0))
    return np.column_stack([table.column(f).cast(pa.float64()).fill_null(np.nan).to_numpy() for f in names])


def dataset_row_hashes(table: pa.Table, task: Any) -> np.ndarray:
    """The one row hash (rewards.duplicates.row_hashes) of a table cast to its task; null labels hash as 0 or ''."""
    from rewards.duplicates import row_hashes

    lab = table.column(task.label)
    if pa.types.is_integer(lab.type):
        labels = lab.cast(pa.int64()).fill_null(0).to_numpy()
    else:
        labels = np.array(lab.cast(pa.string()).fill_null("").to_pylist(), dtype=object)
    return row_hashes(_feature_matrix(table, task.feature_names()), labels)


def _with_submission_columns(table: pa.Table, sid: str, account_id: str | None) -> pa.Table:
    """Append `_submission_id`, `_contributor` (account id) and `_row` (0-based index)."""
    n = table.num_rows
    table = table.append_column("_submission_id", pa.array([sid] * n, pa.string()))
    table = table.append_column("_contributor", pa.array([account_id] * n, pa.string()))
    return table.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))


def _write_parquet(table: pa.Table, path: str) -> None:
    import pyarrow.parquet as pq

    storage.write_atomic(path, lambda f: pq.write_table(table, f))


# ----------------------------------------------------------------------------------------------- DoFns


class ParseFn(beam.DoFn):
    """Read one manifest (bounded, regular files only), parse it, and verify its signature before anything else."""

    def __init__(self, drop: str):
        self.drop = drop

    def process(self, listed: Listed) -> Iterator[Any]:
        out = self._parse(listed)
        if out is not None:
            yield out

    def _parse(self, listed: Listed) -> Any:
        sighting = Sighting(listed.arrival, listed.received_at, listed.stale)
        only_manifest = (listed.manifest_file,)  # an unverified manifest speaks for no payload: that stays put
        try:
            data = storage.read_regular(storage.join(self.drop, listed.manifest_file), MAX_MANIFEST_BYTES)
            m = parse_manifest(data, listed.manifest_file)
        except storage.NotRegularFile:
            return TaggedOutput(REJECTED, unverified_record(listed.manifest_file, only_manifest, sighting,
                                                           R.NOT_REGULAR, f"{listed.manifest_file}: not a regular file; not opened"))
        except FileNotFoundError:
            return None  # taken away since the listing: nothing to decide
        except ManifestError as e:
            return TaggedOutput(REJECTED, unverified_record(listed.manifest_file, only_manifest, sighting,
                                                           R.UNREADABLE, str(e)))
        try:
            verify_signature(m)
        except SignatureError as e:
            return TaggedOutput(REJECTED, unverified_record(listed.manifest_file, only_manifest, sighting,
                                                           R.BAD_SIGNATURE, str(e)))
        if m.payload != listed.payload_file:
            return TaggedOutput(REJECTED, unverified_record(
                listed.manifest_file, only_manifest, sighting, R.UNREADABLE,
                f"{listed.manifest_file}: field 'payload': names '{m.payload}', but the manifest of a payload must "
                f"be named '<payload>{MANIFEST_SUFFIX}'"))
        return Submission(listed=listed, manifest=m)


class AdmitFn(beam.DoFn):
    """Registered key, known task, kind allowed for the role; then the payload: regular, size, digest."""

    def __init__(self, drop: str, accounts: dict, task_names: dict, max_payload_bytes: int,
                 closed_tasks: frozenset[str] = frozenset()):
        self.drop = drop
        self.accounts = accounts
        self.task_names = task_names      # name -> whether predictions are open (the task has a challenge)
        self.closed_tasks = closed_tasks
        self.max_payload_bytes = max_payload_bytes

    def process(self, sub: Submission) -> Iterator[Any]:
        yield self._admit(sub)

    def _admit(self, sub: Submission) -> Any:
        m = sub.manifest
        acct = self.accounts.get(m.public_key)
        if acct is None:
            return TaggedOutput(REJECTED, _rejected(sub, R.UNKNOWN_KEY, f"{m.payload}: public key {m.public_key} is "
                                                                        "not registered; register it first"))
        sub = Submission(listed=sub.listed, manifest=m, account_id=acct[0], role=acct[1])
        try:
            self._admissible(m, acct[1])
            self._payload(sub)
        except _Reject as r:
            return TaggedOutput(REJECTED, _rejected(sub, r.reason, r.detail))
        except _Wait:
            if sub.listed.stale:
                return TaggedOutput(REJECTED, _rejected(sub, R.INCOMPLETE, f"{m.payload}: still missing or shorter "
                                                        f"than the manifest's size {m.size} when the wait ran out"))
            return TaggedOutput(WAITING, _waiting(sub.listed))
        return m.public_key, sub

    def _admissible(self, m: Manifest, role: str) -> None:
        if m.kind in TABLE_KINDS and m.task not in self.task_names:
            known = ", ".join(sorted(self.task_names)) or "none"
            raise _Reject(R.UNKNOWN_TASK, f"{m.payload}: task '{m.task}' is not a known task (known: {known})")
        if m.kind in TABLE_KINDS and m.task in self.closed_tasks:
            raise _Reject(R.TASK_CLOSED, f"{m.payload}: task '{m.task}' is closed by governance (setting "
                                         f"task.{m.task}.open = false); it takes no new submissions")
        allowed = ROLE_KINDS.get(role, ())
        if m.kind not in allowed:
            raise _Reject(R.KIND_NOT_ALLOWED, f"{m.payload}: kind '{m.kind}' is not allowed for role '{role}' "
                                              f"(allowed: {', '.join(allowed) or 'none'})")
        if m.kind == "predictions" and not self.task_names[m.task]:
            raise _Reject(R.KIND_NOT_ALLOWED, f"{m.payload}: predictions are not open for task {m.task} yet")

    def _payload(self, sub: Submission) -> None:
        m = sub.manifest
        path = storage.join(self.drop, m.payload)
        h = hashlib.blake2b(digest_size=32)
        size = 0
        try:
            with storage.open_regular(path) as f:
                while chunk := f.read(storage.READ_CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_payload_bytes:
                        raise _Reject(R.TOO_LARGE, f"{m.payload}: over max_payload_bytes={self.max_payload_bytes}")
                    if size > m.size:
                        raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: longer than the manifest's size {m.size}")
                    h.update(chunk)
        except storage.NotRegularFile:
            raise _Reject(R.NOT_REGULAR, f"{m.payload}: not a regular file (a link, FIFO, device or directory); "
                                         "not opened or followed") from None
        except FileNotFoundError:
            raise _Wait() from None
        if m.size > self.max_payload_bytes:
            raise _Reject(R.TOO_LARGE, f"{m.payload}: size {m.size} is over max_payload_bytes={self.max_payload_bytes}")
        if size < m.size:
            raise _Wait()
        if h.hexdigest() != m.digest:
            raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: BLAKE2b-256 digest is {h.hexdigest()}, the manifest "
                                             f"says {m.digest}")


class NonceOrderFn(beam.DoFn):
    """Per key, in nonce order: each nonce must exceed the key's last used one; repeats and lower ones are replays."""

    def __init__(self, last_nonce: dict):
        self.last_nonce = last_nonce

    def process(self, keyed: tuple[str, Iterable[Submission]]) -> Iterator[Any]:
        key, subs = keyed
        last = self.last_nonce.get(key)
        for sub in sorted(subs, key=lambda s: (s.manifest.nonce, s.listed.arrival)):
            n = sub.manifest.nonce
            if last is not None and n <= last:
                yield TaggedOutput(REJECTED, _rejected(
                    sub, R.REPLAYED_NONCE, f"{sub.listed.payload_file}: nonce {n} is not above the last used nonce "
                                           f"{last} of key {key}; nonces must strictly increase"))
                continue
            last = n
            yield sub


@dataclass(frozen=True)
class Staged:
    """A decoded submission waiting for its task's quality gate, its rows in a staging file."""

    sub: Submission
    stats: dict
    staged_path: str
    rows: int


class DecodeFn(beam.DoFn):
    """Payload bytes to a task-shaped Arrow table with id columns (and row hashes), staged for the gate."""

    def __init__(self, drop: str, staging: str, registry: Registry, max_payload_bytes: int, epoch: int):
        self.drop = drop
        self.staging = staging
        self.accounts = dict(registry.accounts)
        self.tasks = dict(registry.tasks)
        self.challenge_ids = dict(registry.challenge_ids)
        self.rules = WeightRules(epoch, registry.commit_reveal, registry.reveal_epochs, dict(registry.commitments))
        self.max_payload_bytes = max_payload_bytes

    def process(self, sub: Submission) -> Iterator[Any]:
        try:
            yield (sub.manifest.kind, sub.manifest.task), self._decode(sub)
        except _Reject as r:
            yield TaggedOutput(REJECTED, _rejected(sub, r.reason, r.detail, nonce_used=True))

    def _payload_bytes(self, sub: Submission) -> bytes:
        """The payload again, checked against the verified digest (it must not change under us)."""
        m = sub.manifest
        try:
            data = storage.read_regular(storage.join(self.drop, m.payload), self.max_payload_bytes)
        except (OSError, storage.NotRegularFile) as e:
            raise _Reject(R.UNREADABLE, f"{m.payload}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        if hashlib.blake2b(data, digest_size=32).hexdigest() != m.digest:
            raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: changed while being ingested; digest no longer matches")
        return data

    def _decode(self, sub: Submission) -> Staged:
        from quality.errors import SchemaError, UnreadableError

        m = sub.manifest
        data = self._payload_bytes(sub)
        sid = sub.submission_id
        if m.kind == "request":
            from pipelines.requests import RequestRejected, parse_request

            try:
                table = parse_request(data, m.payload)
            except RequestRejected as r:
                raise _Reject(r.reason, r.detail) from None
            return self._stage(sub, _with_submission_columns(table, sid, sub.account_id), {})
        if m.kind == "weights":
            try:
                table = parse_weights(data, m.payload, validator_key=m.public_key, rules=self.rules,
                                      accounts=self.accounts)
            except WeightsRejected as w:
                raise _Reject(w.reason, w.detail) from None
            return self._stage(sub, _with_submission_columns(table, sid, sub.account_id), {})
        from quality import gate as quality_gate
        from quality.reader import read_table_bytes
        from quality.schema import cast_predictions, cast_to_task

        task = self.tasks[m.task]
        try:
            table = read_table_bytes(data, m.payload)
            if m.kind == "predictions":
                table = cast_predictions(table, task, file=m.payload)
                stats = quality_gate.predictions_stats(table, task, self.challenge_ids[m.task], sid)
                return self._stage(sub, _with_submission_columns(table, sid, sub.account_id), stats)
            table = cast_to_task(table, task, file=m.payload)
        except SchemaError as e:
            raise _Reject(R.UNREADABLE if isinstance(e, UnreadableError) else R.SCHEMA_MISMATCH, str(e)) from None
        stats = quality_gate.submission_stats(table, task, sid)
        hashes = dataset_row_hashes(table, task)
        table = _with_submission_columns(table, sid, sub.account_id)
        return self._stage(sub, table.append_column(ROW_HASH_COLUMN, pa.array(hashes, pa.uint64())), stats)

    def _stage(self, sub: Submission, table: pa.Table, stats: dict) -> Staged:
        key = hashlib.blake2b(sub.submission_id.encode(), digest_size=16).hexdigest()
        path = storage.join(self.staging, key + STAGED_SUFFIX)
        _write_parquet(table, path)
        return Staged(sub, stats, path, table.num_rows)


class GateFn(beam.DoFn):
    """One Great Expectations validation per (kind, task) over every staged submission's statistics."""

    def __init__(self, registry: Registry, docs_dir: str | None):
        self.tasks = dict(registry.tasks)
        self.challenge_ids = dict(registry.challenge_ids)
        self.docs_dir = docs_dir

    def process(self, keyed: tuple[tuple[str, str], Iterable[Staged]]) -> Iterator[Any]:
        (kind, task_name), group = keyed
        group = sorted(group, key=lambda s: s.sub.listed.arrival)
        # Weights and requests carry no table for a task: nothing for Great Expectations to gate.
        yield from (self._passed_weights(group) if kind in ("weights", "request") else self._gate(kind, task_name, group))

    @staticmethod
    def _passed_weights(group: list[Staged]) -> Iterator[Any]:
        for s in group:
            yield s, ()

    def _gate(self, kind: str, task_name: str, group: list[Staged]) -> Iterator[Any]:
        from quality import gate as quality_gate

        task = self.tasks[task_name]
        stats = [s.stats for s in group]
        docs = storage.join(self.docs_dir, f"{kind}-{task_name}") if self.docs_dir else None
        if kind == "predictions":
            reports = quality_gate.gate_predictions(stats, task, self.challenge_ids[task_name], docs_dir=docs)
        else:
            reports = quality_gate.gate(stats, task, docs_dir=docs)
        what = "predictions" if kind == "predictions" else "task"
        for s in group:
            report = reports[s.sub.submission_id]
            if report.success:
                yield s, tuple(getattr(report, "suspicious", ()) or ())
            else:
                storage.delete(s.staged_path)
                yield TaggedOutput(REJECTED, _rejected(
                    s.sub, R.QUALITY_FAILED, f"{s.sub.manifest.payload}: quality gate for {what} '{task_name}' "
                                             f"failed: {report.summary()}", nonce_used=True))


class WriteLakeFn(beam.DoFn):
    """Move a staged table to lake/epoch=E/kind=K/task=T/<digest>-<key>.parquet unless it is already there."""

    def __init__(self, lake: str, epoch: int):
        self.lake = lake
        self.epoch = epoch

    def process(self, element: tuple[Staged, tuple[str, ...]]) -> Iterator[dict]:
        staged, suspicious = element
        sub, m = staged.sub, staged.sub.manifest
        path = lake_path(self.lake, self.epoch, m.kind, m.task, m.digest, m.public_key)
        if storage.exists(path):      # content-addressed: a rerun writes nothing new
            storage.delete(staged.staged_path)
        else:
            storage.move(staged.staged_path, path)
        listed = sub.listed
        a = Accepted(submission_id=sub.submission_id, arrival=listed.arrival, account_id=sub.account_id or "",
                     public_key=m.public_key, kind=m.kind, task=m.task, digest=m.digest, nonce=m.nonce,
                     rows=staged.rows, lake_path=path, received_at=listed.received_at, file=m.payload,
                     files=(listed.payload_file, listed.manifest_file), suspicious=tuple(suspicious))
        yield _record("accepted", a)


# ------------------------------------------------------------------------------------- composite transforms


class ReadManifests(beam.PTransform):
    """The listed manifests, spread over workers, parsed and signature-checked; `rejected` holds the rest."""

    def __init__(self, drop: str, listed: Sequence[Listed]):
        super().__init__()
        self.drop = drop
        self.listed = list(listed)

    def expand(self, pbegin):
        return (pbegin
                | "List" >> beam.Create(self.listed)
                | "Spread" >> beam.Reshuffle()
                | "ParseAndVerify" >> beam.ParDo(ParseFn(self.drop)).with_outputs(REJECTED, main="ok"))


class Admit(beam.PTransform):
    """Key, task, kind and payload checks; passing submissions come out keyed by public key."""

    def __init__(self, drop: str, registry: Registry, max_payload_bytes: int):
        super().__init__()
        self.fn = AdmitFn(drop, dict(registry.accounts),
                          {name: bool(getattr(t, "challenge", None)) for name, t in registry.tasks.items()},
                          max_payload_bytes, frozenset(registry.closed_tasks))

    def expand(self, pcoll):
        return pcoll | "Check" >> beam.ParDo(self.fn).with_outputs(REJECTED, WAITING, main="ok")


class CheckNonces(beam.PTransform):
    """Group by key and admit nonces in increasing order, each above the registry's last used nonce."""

    def __init__(self, last_nonce: Mapping[str, int]):
        super().__init__()
        self.last_nonce = dict(last_nonce)

    def expand(self, keyed):
        return (keyed
                | "ByKey" >> beam.GroupByKey()
                | "InOrder" >> beam.ParDo(NonceOrderFn(self.last_nonce)).with_outputs(REJECTED, main="ok"))


class Decode(beam.PTransform):
    """Payload bytes to staged, task-shaped Arrow tables with their quality statistics, keyed by (kind, task)."""

    def __init__(self, drop: str, staging: str, registry: Registry, max_payload_bytes: int, epoch: int):
        super().__init__()
        self.fn = DecodeFn(drop, staging, registry, max_payload_bytes, epoch)

    def expand(self, pcoll):
        return pcoll | "ToArrow" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="ok")


class Gate(beam.PTransform):
    """Each task's Great Expectations suite, run once over all its submissions' statistics."""

    def __init__(self, registry: Registry, docs_dir: str | None):
        super().__init__()
        self.fn = GateFn(registry, docs_dir)

    def expand(self, keyed):
        return (keyed
                | "ByTask" >> beam.GroupByKey()
                | "Suite" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="ok"))


class WriteLake(beam.PTransform):
    """Content-addressed, idempotent lake writes; one accepted record per submission."""

    def __init__(self, lake: str, epoch: int):
        super().__init__()
        self.fn = WriteLakeFn(lake, epoch)

    def expand(self, pcoll):
        return pcoll | "Write" >> beam.ParDo(self.fn)


class WriteResults(beam.PTransform):
    """Result records as JSON lines under the run's staging folder, for the driver to read back on any runner."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, pcoll):
        return (pcoll
                | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
                | "Write" >> beam.io.WriteToText(self.prefix, file_name_suffix=RESULTS_SUFFIX))


def build_pipeline(p: beam.Pipeline, *, drop: str, lake: str, staging: str, docs_dir: str | None, epoch: int,
                   registry: Registry, listed: Sequence[Listed], max_payload_bytes: int, results_prefix: str) -> None:
    """The ingest graph on pipeline `p` (kept separate so tests can build it for any runner's options)."""
    parsed = p | "ReadManifests" >> ReadManifests(drop, listed)
    admitted = parsed.ok | "Admit" >> Admit(drop, registry, max_payload_bytes)
    ordered = admitted.ok | "CheckNonces" >> CheckNonces(registry.last_nonce)
    decoded = ordered.ok | "Decode" >> Decode(drop, staging, registry, max_payload_bytes, epoch)
    gated = decoded.ok | "Gate" >> Gate(registry, docs_dir)
    accepted = gated.ok | "WriteLake" >> WriteLake(lake, epoch)
    _ = ((accepted, parsed[REJECTED], admitted[REJECTED], admitted[WAITING], ordered[REJECTED], decoded[REJECTED],
          gated[REJECTED])
         | "AllResults" >> beam.Flatten()
         | "WriteResults" >> WriteResults(results_prefix))


# ---------------------------------------------------------------------------------------------- the driver


def _read_records(run_dir: str) -> list[dict]:
    from apache_beam.io.filesystems import FileSystems

    records = []
    matched = FileSystems.match([storage.join(run_dir, RESULTS_PREFIX + "*" + RESULTS_SUFFIX)])[0].metadata_list
    for meta in sorted(matched, key=lambda m: m.path):
        with FileSystems.open(meta.path) as f:
            records.extend(json.loads(line) for line in f.read().decode("utf-8").splitlines() if line.strip())
    return records


def _standalone(scan: DropScan, sightings: Mapping[str, Sighting]) -> list[dict]:
    """Decisions the driver makes from the listing alone: non-regular entries, and loose files past the wait."""
    out = []
    bad = {e.name: e for e in scan.bad_names}
    paired = {e.name[: -len(MANIFEST_SUFFIX)] for e in scan.bad_names if e.regular and e.name.endswith(MANIFEST_SUFFIX)}
    for e in scan.bad_names:
        shown = display_name(e.name)
        if not e.regular:
            out.append(unverified_record(shown, (e.name,), sightings[e.name], R.NOT_REGULAR,
                                         f"{shown}: a {e.what}, not a regular file; not opened or followed"))
        elif e.name.endswith(MANIFEST_SUFFIX):
            payload = e.name[: -len(MANIFEST_SUFFIX)]
            files = (payload, e.name) if payload in bad and bad[payload].regular else (e.name,)
            out.append(unverified_record(shown, files, sightings[e.name], R.UNREADABLE,
                                         f"{shown}: field 'payload': the file name is not valid UTF-8"))
        elif e.name not in paired:
            out.append(unverified_record(shown, (e.name,), sightings[e.name], R.UNREADABLE,
                                         f"{shown}: the file name is not valid UTF-8; name files in UTF-8"))
    for e in scan.not_regular:
        out.append(unverified_record(e.name, (e.name,), sightings[e.name], R.NOT_REGULAR,
                                     f"{e.name}: a {e.what}, not a regular file; not opened or followed"))
    for e in (*scan.loose, *scan.in_progress):
        s = sightings[e.name]
        if s.stale:
            out.append(unverified_record(e.name, (e.name,), s, R.INCOMPLETE,
                                         f"{e.name}: no manifest completed this file before the wait ran out"))
    return out


def run_ingest(*, drop: str, lake: str, staging: str, epoch: int, registry: Registry, scan: DropScan,
               sightings: Mapping[str, Sighting], max_payload_bytes: int, docs_dir: str | None = None,
               pipeline_args: Sequence[str] = ()) -> IngestResult:
    """Decide every submission in `scan` (names already decided are left out by the caller); move nothing.

    `sightings` has an entry for every name in the scan. Accepted rows are in the lake when this returns; the caller
    records the result and then calls `move_files`. `pipeline_args` reach Beam unchanged (e.g. `--runner=...`).
    """
    drop, lake, staging = str(drop), str(lake), str(staging)
    records = _standalone(scan, sightings)
    listed = [Listed(m.name, sightings[m.name].arrival, sightings[m.name].first_seen_at, sightings[m.name].stale)
              for m in scan.manifests if m.name in sightings]
    if listed:
        quiet_beam_logging()
        run_dir = storage.join(staging, f"run-{epoch}-{uuid.uuid4().hex[:12]}")
        try:
            with beam.Pipeline(options=build_options(pipeline_args)) as p:
                build_pipeline(p, drop=drop, lake=lake, staging=run_dir, docs_dir=docs_dir, epoch=epoch,
                               registry=registry, listed=listed, max_payload_bytes=max_payload_bytes,
                               results_prefix=storage.join(run_dir, RESULTS_PREFIX))
            pipeline_records = _read_records(run_dir)
        finally:
            storage.delete(run_dir)
        decided = {r["files"][-1] if r["status"] != "waiting" else r["manifest_file"] for r in pipeline_records}
        missing = sorted({x.manifest_file for x in listed} - decided)
        gone = {m for m in missing if not storage.exists(storage.join(drop, m))}
        if set(missing) - gone:
            raise IngestError(f"ingest of epoch {epoch} lost track of {', '.join(sorted(set(missing) - gone))}; "
                              "nothing was recorded or moved, rerun the epoch")
        records += pipeline_records
    acc_fields = [f.name for f in fields(Accepted)]
    rej_fields = [f.name for f in fields(Rejected)]
    accepted, rejected, waiting = [], [], []
    for r in records:
        if r["status"] == "accepted":
            accepted.append(Accepted(**{k: tuple(r[k]) if k in ("files", "suspicious") else r[k] for k in acc_fields}))
        elif r["status"] == "rejected":
            rejected.append(Rejected(**{k: tuple(r[k]) if k == "files" else r[k] for k in rej_fields}))
        else:
            waiting.append(r["manifest_file"])
    accepted.sort(key=lambda a: a.arrival)
    rejected.sort(key=lambda r: r.arrival)
    return IngestResult(epoch=epoch, accepted=tuple(accepted), rejected=tuple(rejected), waiting=tuple(sorted(waiting)))


def _free_name(dest: str, name: str) -> str:
    """`name`, or `stem~N.ext`, so that nothing already in `dest` is overwritten."""
    if not storage.exists(storage.join(dest, name)):
        return name
    stem, dot, ext = name.partition(".")
    n = 1
    while storage.exists(storage.join(dest, f"{stem}~{n}{dot}{ext}")):
        n += 1
    return f"{stem}~{n}{dot}{ext}"


def move_files(drop: str, dest: str, names: Sequence[str]) -> list[str]:
    """Move named entries of drop/ into `dest` (links as links), never overwriting; returns the names moved.

    A name that is no longer in drop/ was moved by an earlier, interrupted run: skipped, so moving is idempotent.
    """
    moved = []
    for name in names:
        src = storage.join(str(drop), name)
        if not storage.exists(src):
            continue
        storage.move(src, storage.join(str(dest), _free_name(str(dest), name)))
        moved.append(name)
    return moved


def iso(ts: datetime) -> str:
    """Ingest's timestamps: ISO-8601 with microseconds."""
    return ts.isoformat(timespec="microseconds")
