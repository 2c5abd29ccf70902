"""The checks of ingest as Beam DoFns: the per-file work in one place (CheckFileFn: parse and verify the signature,
admit key, task, kind and payload, read and hash the payload once, decode, cast, statistics, row hashes, stage), then
the nonce order per key, the quality gate per task, the lake write, and one result file per submission.

The graph is one chain with no side outputs and no side inputs: a submission decided at any step travels on through
the later steps untouched (as a record, a JSON-able dict), so every runner, including one that ignores output tags
or recomputes what it reads twice (Beam's DaskRunner), gives the same decisions. A rejection carries its reason
code (protocol.reasons) and a detail naming the file, the field and the rule."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.errors import ManifestError, SignatureError
from pipelines.lake import ROW_HASH_COLUMN, lake_path
from pipelines.manifest import MANIFEST_SUFFIX, MAX_MANIFEST_BYTES, Manifest, parse_manifest, verify_signature
from pipelines.records import (
    Accepted, Listed, Registry, Sighting, Submission, record, rejected_record, unverified_record, waiting_record,
)
from pipelines.weights import WeightRules, WeightsRejected, parse_weights
from protocol import reasons as R
from protocol.canonical import payload_digest
from protocol.files import NotRegularFile

ROLE_KINDS: Mapping[str, tuple[str, ...]] = {
    "contributor": ("dataset", "predictions", "request"),
    "validator": ("weights", "request"),
}
TABLE_KINDS = ("dataset", "predictions")   # kinds that name a task and carry a table
STAGED_SUFFIX = ".staged.parquet"
RESULT_SUFFIX = ".json"
DECIDED = "decided"  # first part of the grouping key of a record already decided (it only passes through)


class _Reject(Exception):
    """Raised inside a stage to send the current submission to the rejected output."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Wait(Exception):
    """The payload is not all there yet."""


class _Vanished(Exception):
    """The manifest was taken away since the listing: nothing to decide."""


# ------------------------------------------------------------------------------------------------ helpers


def _feature_matrix(table: pa.Table, names: Sequence[str]) -> np.ndarray:
    if not names:
        return np.zeros((table.num_rows, 0))
    return np.column_stack([table.column(f).cast(pa.float64()).fill_null(np.nan).to_numpy() for f in names])


def dataset_row_hashes(table: pa.Table, task: Any) -> np.ndarray:
    """The one row hash (rewards.duplicates.row_hashes) of a table cast to its task; null labels hash as 0 or ''."""
    from rewards.duplicates import column_row_hashes, row_hashes

    lab = table.column(task.label)
    names = task.feature_names()
    if pa.types.is_integer(lab.type):  # the columns as the table holds them: no matrix is stacked
        columns = [table.column(f).cast(pa.float64()).to_numpy() for f in names]  # a null reads as NaN
        return column_row_hashes(columns, lab.cast(pa.int64()).fill_null(0).to_numpy())
    labels = np.array(lab.cast(pa.string()).fill_null("").to_pylist(), dtype=object)
    return row_hashes(_feature_matrix(table, names), labels)


def _repeated(value: str | None, n: int) -> pa.Array:
    """A string column holding `value` n times, built in Arrow (no list of n Python strings)."""
    import pyarrow.compute as pc

    return pc.take(pa.array([value], pa.string()), pa.array(np.zeros(n, dtype=np.int32)))


def _with_submission_columns(table: pa.Table, sid: str, account_id: str | None) -> pa.Table:
    """Append `_submission_id`, `_contributor` (account id) and `_row` (0-based index)."""
    n = table.num_rows
    table = table.append_column("_submission_id", _repeated(sid, n))
    table = table.append_column("_contributor", _repeated(account_id, n))
    return table.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))


def _write_parquet(table: pa.Table, path: str) -> None:
    import pyarrow.parquet as pq

    # Dictionary-encode only the columns that repeat (ids, labels, text): trying it on every float column, as
    # pyarrow does by default, costs about twice the whole write and makes a bigger file.
    repeat = [f.name for f in table.schema if not pa.types.is_floating(f.type) and f.name not in ("_row", ROW_HASH_COLUMN)]
    # The data is synced here, on the worker (its wait overlaps other work); the rename into the lake is synced by
    # the driver, one fsync per lake folder, before the ledger records anything.
    storage.write_atomic(path, lambda f: pq.write_table(table, f, use_dictionary=repeat), sync_folder=False)


# ------------------------------------------------------------------------------------------- the elements


@dataclass(frozen=True)
class Staged:
    """A decoded submission waiting for its task's quality gate, its rows in a staging file."""

    sub: Submission
    stats: dict
    staged_path: str
    rows: int


@dataclass(frozen=True)
class Checked:
    """CheckFileFn's verdict on one listed manifest, small (no bytes): exactly one of
    - `final`: a decision already made (unverified, refused at admission, waiting for its payload);
    - `staged`: decoded and staged, for the nonce check and the gate;
    - `late`: refused while decoding; it stands only if the nonce check passes (a replay is a replay first).
    `sub` is set when the signature verified: then the key's nonce order applies (a verified refusal at admission
    still spends its nonce; a waiting submission does not, it is decided in a later run)."""

    listed: Listed
    sub: Submission | None = None
    final: dict | None = None
    staged: Staged | None = None
    late: dict | None = None

    @property
    def in_nonce_order(self) -> bool:
        return self.sub is not None and not (self.final is not None and self.final["status"] == "waiting")


def nonce_key(c: Checked) -> str:
    """The nonce check's grouping key: the public key of a verified submission, else a key of its own."""
    return c.sub.manifest.public_key if c.in_nonce_order else f"{DECIDED}:{c.listed.arrival}"


def gate_key(item: Staged | dict) -> tuple[str, str]:
    """The gate's grouping key: (kind, task) of a staged submission; a decided record has a key of its own."""
    if isinstance(item, Staged):
        return item.sub.manifest.kind, item.sub.manifest.task
    return DECIDED, str(item["arrival"])


# ----------------------------------------------------------------------------------------------- DoFns


class CheckFileFn(beam.DoFn):
    """All the per-file work of one submission, in one place: the manifest (bounded, regular files only) and its
    signature before anything else; key, task and kind; the payload read once (regular, size, BLAKE2b-256); then
    decoded from those same bytes, cast to the task, its statistics and row hashes, staged as Parquet.

    A `request` from an unregistered key goes on (with no account): only a `register` request may come from one,
    which is told once the payload is read (any other action is `unknown_key`), and the ledger decides whether
    registration is open (docs/PROTOCOL.md §6, `register`)."""

    def __init__(self, drop: str, staging: str, registry: Registry, max_payload_bytes: int, epoch: int):
        self.drop = drop
        self.staging = staging
        self.accounts = dict(registry.accounts)
        self.tasks = dict(registry.tasks)
        self.closed_tasks = frozenset(registry.closed_tasks)
        self.challenge_ids = dict(registry.challenge_ids)
        self.rules = WeightRules(epoch, registry.commit_reveal, registry.reveal_epochs, dict(registry.commitments))
        self.max_payload_bytes = max_payload_bytes

    def process(self, listed: Listed) -> Iterator[Checked]:
        try:
            sub = self._parse(listed)
        except _Vanished:
            return
        if isinstance(sub, dict):
            yield Checked(listed, final=sub)
            return
        m = sub.manifest
        acct = self.accounts.get(m.public_key)
        if acct is None and m.kind != "request":
            yield Checked(listed, sub, final=rejected_record(sub, R.UNKNOWN_KEY, f"{m.payload}: public key "
                                                             f"{m.public_key} is not registered; register it first"))
            return
        if acct is not None:
            sub = Submission(listed=listed, manifest=m, account_id=acct[0], role=acct[1])
        try:
            if acct is not None:
                self._admissible(m, acct[1])
            data = self._payload(sub)
        except _Reject as r:
            yield Checked(listed, sub, final=rejected_record(sub, r.reason, r.detail))
            return
        except _Wait:
            if listed.stale:
                yield Checked(listed, sub, final=rejected_record(sub, R.INCOMPLETE, f"{m.payload}: still missing or "
                                                                 f"shorter than the manifest's size {m.size} when "
                                                                 "the wait ran out"))
            else:
                yield Checked(listed, sub, final=waiting_record(listed))
            return
        try:
            yield Checked(listed, sub, staged=self._decode(sub, data))
        except _Reject as r:
            yield Checked(listed, sub, late=rejected_record(sub, r.reason, r.detail, nonce_used=True))

    def _parse(self, listed: Listed) -> Submission | dict:
        sighting = Sighting(listed.arrival, listed.received_at, listed.stale)
        only_manifest = (listed.manifest_file,)  # an unverified manifest speaks for no payload: that stays put
        try:
            data = storage.read_regular(storage.join(self.drop, listed.manifest_file), MAX_MANIFEST_BYTES)
            m = parse_manifest(data, listed.manifest_file)
        except NotRegularFile:
            return unverified_record(listed.manifest_file, only_manifest, sighting, R.NOT_REGULAR,
                                     f"{listed.manifest_file}: not a regular file; not opened")
        except FileNotFoundError:
            raise _Vanished() from None
        except ManifestError as e:
            return unverified_record(listed.manifest_file, only_manifest, sighting, R.UNREADABLE, str(e))
        try:
            verify_signature(m)
        except SignatureError as e:
            return unverified_record(listed.manifest_file, only_manifest, sighting, R.BAD_SIGNATURE, str(e))
        if m.payload != listed.payload_file:
            return unverified_record(
                listed.manifest_file, only_manifest, sighting, R.UNREADABLE,
                f"{listed.manifest_file}: field 'payload': names '{m.payload}', but the manifest of a payload must "
                f"be named '<payload>{MANIFEST_SUFFIX}'")
        return Submission(listed=listed, manifest=m)

    def _admissible(self, m: Manifest, role: str) -> None:
        if m.kind in TABLE_KINDS and m.task not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise _Reject(R.UNKNOWN_TASK, f"{m.payload}: task '{m.task}' is not a known task (known: {known})")
        if m.kind in TABLE_KINDS and m.task in self.closed_tasks:
            raise _Reject(R.TASK_CLOSED, f"{m.payload}: task '{m.task}' is closed by governance (setting "
                                         f"task.{m.task}.open = false); it takes no new submissions")
        allowed = ROLE_KINDS.get(role, ())
        if m.kind not in allowed:
            raise _Reject(R.KIND_NOT_ALLOWED, f"{m.payload}: kind '{m.kind}' is not allowed for role '{role}' "
                                              f"(allowed: {', '.join(allowed) or 'none'})")
        if m.kind == "predictions" and m.task not in self.challenge_ids:
            raise _Reject(R.KIND_NOT_ALLOWED, f"{m.payload}: predictions are not open for task {m.task} yet")

    def _payload(self, sub: Submission) -> bytes:
        """The payload's bytes, read once: never more than the manifest's size (or the limit) plus one byte."""
        m = sub.manifest
        limit = min(m.size, self.max_payload_bytes)
        try:
            with storage.open_regular(storage.join(self.drop, m.payload)) as f:
                # One read of what is there, never more than limit + 1 bytes (limit: the signed size, itself
                # bounded): sized by the file, so a manifest that claims a huge size costs no huge buffer.
                size_now = _size_of(f)
                want = limit + 1 if size_now is None else min(limit, size_now) + 1
                data = f.read(want)
                if len(data) == want <= limit:  # it grew while being read: the rest, up to the limit
                    data += f.read(limit + 1 - want)
                longer = len(data) > limit
                over_limit = longer and (limit == self.max_payload_bytes or (size_now or 0) > self.max_payload_bytes)
        except NotRegularFile:
            raise _Reject(R.NOT_REGULAR, f"{m.payload}: not a regular file (a link, FIFO, device or directory); "
                                         "not opened or followed") from None
        except FileNotFoundError:
            raise _Wait() from None
        if over_limit:
            raise _Reject(R.TOO_LARGE, f"{m.payload}: over max_payload_bytes={self.max_payload_bytes}")
        if longer:
            raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: longer than the manifest's size {m.size}")
        if m.size > self.max_payload_bytes:
            raise _Reject(R.TOO_LARGE, f"{m.payload}: size {m.size} is over max_payload_bytes={self.max_payload_bytes}")
        if len(data) < m.size:
            raise _Wait()
        digest = payload_digest(data)
        if digest != m.digest:
            raise _Reject(R.DIGEST_MISMATCH, f"{m.payload}: BLAKE2b-256 digest is {digest}, the manifest says "
                                             f"{m.digest}")
        return data

    def _decode(self, sub: Submission, data: bytes) -> Staged:
        from quality.errors import SchemaError, UnreadableError

        m = sub.manifest
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
            del data  # the table holds what is needed from here on
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
        # Named by the submission: a retried bundle rewrites the same staging file.
        key = hashlib.blake2b(sub.submission_id.encode(), digest_size=16).hexdigest()
        path = storage.join(self.staging, key + STAGED_SUFFIX)
        _write_parquet(table, path)
        return Staged(sub, stats, path, table.num_rows)


def _size_of(f) -> int | None:
    """The size of an open local file now; None where the stream cannot tell (object storage)."""
    import os

    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


class NonceOrderFn(beam.DoFn):
    """Per key, in ARRIVAL order (docs/PROTOCOL.md §4, step 7): a nonce must be above the highest nonce of every
    earlier verified submission of the key, of any kind: those of earlier runs (`last_nonce`) and those that arrived
    before it in this run, accepted or not (a refusal at admission spends its nonce too). Anything else is a replay,
    and its detail names that highest earlier nonce. Out: staged submissions and records (decided ones pass)."""

    def __init__(self, last_nonce: dict):
        self.last_nonce = last_nonce

    def process(self, keyed: tuple[str, Iterable[Checked]]) -> Iterator[Staged | dict]:
        key, items = keyed
        high = self.last_nonce.get(key)
        for c in sorted(items, key=lambda c: c.listed.arrival):
            if not c.in_nonce_order:
                yield c.final
                continue
            n = c.sub.manifest.nonce
            if c.final is not None:  # refused at admission, after its signature verified: decided, nonce spent
                high = n if high is None else max(high, n)
                yield c.final
                continue
            if high is not None and n <= high:
                if c.staged is not None:
                    storage.delete(c.staged.staged_path)
                yield rejected_record(
                    c.sub, R.REPLAYED_NONCE, f"{c.listed.payload_file}: nonce {n} is not above {high}, the highest "
                                             f"nonce of an earlier verified submission of key {key} (any kind, in "
                                             "an earlier run or earlier in this run's arrival order); nonces must "
                                             "strictly increase in arrival order")
                continue
            high = n
            yield c.staged if c.staged is not None else c.late


class GateFn(beam.DoFn):
    """One Great Expectations validation per (kind, task) over every staged submission's statistics.
    Out: (staged, suspicious columns) for a pass, records for the rest (decided ones pass through)."""

    def __init__(self, registry: Registry, docs_dir: str | None):
        self.tasks = dict(registry.tasks)
        self.challenge_ids = dict(registry.challenge_ids)
        self.docs_dir = docs_dir

    def process(self, keyed: tuple[tuple[str, str], Iterable[Staged | dict]]) -> Iterator[Any]:
        (kind, task_name), group = keyed
        if kind == DECIDED:
            yield from group
            return
        group = sorted(group, key=lambda s: s.sub.listed.arrival)
        # Weights and requests carry no table for a task: nothing for Great Expectations to gate.
        yield from (((s, ()) for s in group) if kind in ("weights", "request") else self._gate(kind, task_name, group))

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
                yield rejected_record(s.sub, R.QUALITY_FAILED, f"{s.sub.manifest.payload}: quality gate for {what} "
                                                               f"'{task_name}' failed: {report.summary()}",
                                      nonce_used=True)


class WriteLakeFn(beam.DoFn):
    """Move a staged table to lake/epoch=E/kind=K/task=T/<digest>-<key>.parquet unless it is already there, and
    emit its accepted record; records decided earlier pass through."""

    def __init__(self, lake: str, epoch: int):
        self.lake = lake
        self.epoch = epoch

    def process(self, element: tuple[Staged, tuple[str, ...]] | dict) -> Iterator[dict]:
        if isinstance(element, dict):
            yield element
            return
        staged, suspicious = element
        sub, m = staged.sub, staged.sub.manifest
        path = lake_path(self.lake, self.epoch, m.kind, m.task, m.digest, m.public_key)
        if storage.exists(path):      # content-addressed: a rerun (or a retried bundle) writes nothing new
            storage.delete(staged.staged_path)
        else:
            storage.move(staged.staged_path, path)
        listed = sub.listed
        a = Accepted(submission_id=sub.submission_id, arrival=listed.arrival, account_id=sub.account_id or "",
                     public_key=m.public_key, kind=m.kind, task=m.task, digest=m.digest, nonce=m.nonce,
                     rows=staged.rows, lake_path=path, received_at=listed.received_at, file=m.payload,
                     files=(listed.payload_file, listed.manifest_file), suspicious=tuple(suspicious))
        yield record("accepted", a)


class WriteResultFn(beam.DoFn):
    """Each decision as its own JSON file, named by the submission's arrival number: a transform every runner must
    execute (its output is the graph's last), and a retried bundle rewrites the same file."""

    def __init__(self, folder: str):
        self.folder = folder

    def process(self, rec: dict) -> Iterator[str]:
        import json

        path = storage.join(self.folder, f"{int(rec['arrival']):012d}{RESULT_SUFFIX}")
        data = json.dumps(rec, sort_keys=True).encode("utf-8")
        storage.write_atomic(path, lambda f: f.write(data), durable=False)  # read back at once, then deleted
        yield path
