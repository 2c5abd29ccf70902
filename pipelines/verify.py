"""The checks of ingest as Beam DoFns, in order: parse and verify the signature, admit (key, task, kind, payload),
nonce order, decode and stage, the quality gate, the lake write. Each sends a rejected submission to the
`rejected` side output with its reason code (protocol.reasons) and a detail naming the file, the field and the rule."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.pvalue import TaggedOutput

from pipelines import storage
from pipelines.errors import ManifestError, SignatureError
from pipelines.lake import ROW_HASH_COLUMN, lake_path
from pipelines.manifest import MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, Manifest, parse_manifest, verify_signature
from pipelines.records import (
    Accepted, Listed, Registry, Sighting, Submission, record, rejected_record, unverified_record, waiting_record,
)
from pipelines.weights import WeightRules, WeightsRejected, parse_weights
from protocol import reasons as R
from protocol.canonical import hasher, payload_digest
from protocol.files import READ_CHUNK_BYTES, NotRegularFile

REJECTED = "rejected"   # tag of every stage's side output for rejected submissions
WAITING = "waiting"     # tag for complete-looking submissions whose payload is not all there yet
ROLE_KINDS: Mapping[str, tuple[str, ...]] = {
    "contributor": ("dataset", "predictions", "request"),
    "validator": ("weights", "request"),
}
TABLE_KINDS = ("dataset", "predictions")   # kinds that name a task and carry a table
STAGED_SUFFIX = ".staged.parquet"


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
        except NotRegularFile:
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
    """Registered key, known task, kind allowed for the role; then the payload: regular, size, digest.

    A `request` from an unregistered key goes on (with no account): only a `register` request may come from one,
    which DecodeFn tells once the payload is read (any other action is `unknown_key` there), and the ledger decides
    whether registration is open (docs/PROTOCOL.md §6, `register`)."""

    def __init__(self, drop: str, accounts: dict, task_names: dict, max_payload_bytes: int,
                 closed_tasks: frozenset[str] = frozenset()):
        self.drop = drop
        self.accounts = accounts
        self.task_names = task_names      # name -> whether predictions are open (the task has a challenge)
        self.closed_tasks = closed_tasks
        self.max_payload_bytes = max_payload_bytes

    def process(self, sub: Submission) -> Iterator[Any]:
        out = self._admit(sub)
        yield out
        if isinstance(out, TaggedOutput) and out.tag == REJECTED:
            # Rejected, but signed by its key: its nonce still counts against the key's later arrivals.
            yield sub.manifest.public_key, SpentNonce(sub.listed.arrival, sub.manifest.nonce)

    def _admit(self, sub: Submission) -> Any:
        m = sub.manifest
        acct = self.accounts.get(m.public_key)
        if acct is None and m.kind != "request":
            return TaggedOutput(REJECTED, rejected_record(sub, R.UNKNOWN_KEY, f"{m.payload}: public key "
                                                          f"{m.public_key} is not registered; register it first"))
        if acct is not None:
            sub = Submission(listed=sub.listed, manifest=m, account_id=acct[0], role=acct[1])
        try:
            if acct is not None:
                self._admissible(m, acct[1])
            self._payload(sub)
        except _Reject as r:
            return TaggedOutput(REJECTED, rejected_record(sub, r.reason, r.detail))
        except _Wait:
            if sub.listed.stale:
                return TaggedOutput(REJECTED, rejected_record(sub, R.INCOMPLETE, f"{m.payload}: still missing or "
                                                              f"shorter than the manifest's size {m.size} when the "
                                                              "wait ran out"))
            return TaggedOutput(WAITING, waiting_record(sub.listed))
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
        h = hasher()
        size = 0
        try:
            with storage.open_regular(path) as f:
                while chunk := f.read(READ_CHUNK_BYTES):
                    size += len(chunk)
                    if size > self.max_payload_bytes:
                        raise _Reject(R.TOO_LARGE, f"{m.payload}: over max_payload_bytes={self.max_payload_bytes}")
                    if size > m.size:
                        raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: longer than the manifest's size {m.size}")
                    h.update(chunk)
        except NotRegularFile:
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


@dataclass(frozen=True)
class SpentNonce:
    """A verified submission AdmitFn already rejected: decided, but its nonce still counts for its key's later arrivals
    (as ledger.contributions.last_nonces counts it in later runs)."""

    arrival: int
    nonce: int


def _arrival_of(item: Submission | SpentNonce) -> int:
    return item.arrival if isinstance(item, SpentNonce) else item.listed.arrival


class NonceOrderFn(beam.DoFn):
    """Per key, in ARRIVAL order (docs/PROTOCOL.md §4, step 7): a nonce must be above the highest nonce of every
    earlier verified submission of the key, of any kind: those of earlier runs (`last_nonce`) and those that arrived
    before it in this run, accepted or not (SpentNonce marks the ones AdmitFn rejected). Anything else is a replay,
    and its detail names that highest earlier nonce."""

    def __init__(self, last_nonce: dict):
        self.last_nonce = last_nonce

    def process(self, keyed: tuple[str, Iterable[Submission | SpentNonce]]) -> Iterator[Any]:
        key, items = keyed
        high = self.last_nonce.get(key)
        for item in sorted(items, key=_arrival_of):
            if isinstance(item, SpentNonce):
                high = item.nonce if high is None else max(high, item.nonce)
                continue
            n = item.manifest.nonce
            if high is not None and n <= high:
                yield TaggedOutput(REJECTED, rejected_record(
                    item, R.REPLAYED_NONCE, f"{item.listed.payload_file}: nonce {n} is not above {high}, the highest "
                                            f"nonce of an earlier verified submission of key {key} (any kind, in "
                                            "an earlier run or earlier in this run's arrival order); nonces must "
                                            "strictly increase in arrival order"))
                continue
            high = n
            yield item


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
            yield TaggedOutput(REJECTED, rejected_record(sub, r.reason, r.detail, nonce_used=True))

    def _payload_bytes(self, sub: Submission) -> bytes:
        """The payload again, checked against the verified digest (it must not change under us)."""
        m = sub.manifest
        try:
            data = storage.read_regular(storage.join(self.drop, m.payload), self.max_payload_bytes)
        except (OSError, NotRegularFile) as e:
            raise _Reject(R.UNREADABLE, f"{m.payload}: cannot read ({getattr(e, 'strerror', None) or e})") from None
        if payload_digest(data) != m.digest:
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
            action = table.column("action")[0].as_py()
            if sub.account_id is None and action != "register":
                raise _Reject(R.UNKNOWN_KEY, f"{m.payload}: public key {m.public_key} is not registered; an "
                                             f"unregistered key may send only a register request, not {action}")
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
                yield TaggedOutput(REJECTED, rejected_record(
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
        yield record("accepted", a)

