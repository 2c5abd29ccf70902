"""Epoch ingest (DESIGN 4.2): verify signed submissions in drop/, decode them to Arrow and write the lake.

The Beam graph, one coarse element per submission:

    ReadManifests ─► Verify ─► CheckNonces ─► Decode ─► WriteLake ─┐
         └──────────────┴──────────┴────────────┴── rejected ──────┴─► WriteResults (JSON lines)

The driver lists the drop folder before the run and, after it, moves every submission's files to
archive/epoch=E/ or quarantine/epoch=E/ according to the result records the pipeline wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.feather as pa_feather
import pyarrow.parquet as pq
from apache_beam.pvalue import TaggedOutput

from pipelines.errors import IngestError, ManifestError, SignatureError
from pipelines.manifest import (
    MANIFEST_SUFFIX,
    Manifest,
    payload_digest,
    read_manifest,
    verify_signature,
)
from pipelines.options import build_options, quiet_beam_logging
from pipelines.weights import WeightRules, WeightsRejected, parse_weights

REJECTED = "rejected"                  # tag of every stage's side output for rejected submissions
WEIGHTS_TASK = "_weights"              # lake task directory for validator weight vectors
ROLE_KINDS: Mapping[str, tuple[str, ...]] = {
    "contributor": ("dataset", "predictions"),
    "validator": ("weights",),
}
TABLE_KINDS = ("dataset", "predictions")   # kinds that name a task and carry a table
ROW_HASH_BYTES = 8                     # BLAKE2b-64 row hashes, stored as uint64
RESULTS_PREFIX = "results"
RESULTS_SUFFIX = ".jsonl"

# Reason codes written to the quarantine table.
UNREADABLE = "unreadable"
TOO_LARGE = "too_large"
DIGEST_MISMATCH = "digest_mismatch"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
UNKNOWN_TASK = "unknown_task"
KIND_NOT_ALLOWED = "kind_not_allowed"
REPLAYED_NONCE = "replayed_nonce"
SCHEMA_MISMATCH = "schema_mismatch"
QUALITY_FAILED = "quality_failed"
WRONG_EPOCH = "wrong_epoch"


@dataclass(frozen=True)
class Registry:
    """What ingest must know from the ledger, passed in (pipelines never imports ledger)."""

    accounts: Mapping[str, tuple[str, str]]   # public_key hex -> (account_id, role)
    last_nonce: Mapping[str, int]             # public_key hex -> highest nonce already used (absent: none)
    tasks: Mapping[str, Any]                  # name -> quality.task.Task, duck-typed (pipelines never imports quality)
    commit_reveal: bool = False               # weights must be committed in one epoch and revealed in a later one
    reveal_epochs: int = 1
    commitments: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (validator key, epoch) -> hash


@dataclass(frozen=True)
class Accepted:
    """A submission that passed every check and whose rows are in the lake."""

    submission_id: str
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


@dataclass(frozen=True)
class Rejected:
    """A submission that failed a check; its files are in quarantine/ and `detail` names the file and the rule."""

    submission_id: str
    account_id: str | None
    public_key: str | None
    kind: str | None
    task: str | None
    nonce: int | None
    file: str
    reason: str
    detail: str
    received_at: str


@dataclass(frozen=True)
class IngestResult:
    """Everything one ingest run decided, each tuple sorted by (received_at, submission_id)."""

    epoch: int
    accepted: tuple[Accepted, ...]
    rejected: tuple[Rejected, ...]


# ----------------------------------------------------------------------------------------------- elements


@dataclass(frozen=True)
class Listed:
    """A manifest file found in drop/ by the driver, with its arrival time."""

    manifest_file: str
    received_at: str

    @property
    def payload_file(self) -> str:
        """The payload's name by convention: `<payload>.manifest.json`."""
        return self.manifest_file[: -len(MANIFEST_SUFFIX)]


@dataclass(frozen=True)
class Submission:
    """A parsed manifest on its way through the checks; account fields are set once the key is known."""

    listed: Listed
    manifest: Manifest
    account_id: str | None = None
    role: str | None = None

    @property
    def submission_id(self) -> str:
        """Stable id: the payload digest, the signing key and its nonce."""
        return submission_id(self.manifest.digest, self.manifest.public_key, self.manifest.nonce)


class _Reject(Exception):
    """Raised inside a stage to send the current submission to the rejected output."""

    def __init__(self, reason: str, detail: str, sub: Submission | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sub = sub            # the submission as far as the checks got (account known or not)


def submission_id(digest: str, public_key: str, nonce: int) -> str:
    """Unique per key and nonce (nonces never repeat per key), readable: digest prefix, key prefix, nonce.

    Two keys sending the same bytes are two submissions: the later one must be recorded to be found a duplicate.
    """
    return f"{digest[:12]}-{public_key[:8]}-{nonce}"


def _rejected_record(sub: Submission, reason: str, detail: str) -> dict:
    """The result record of a rejected submission whose manifest parsed."""
    m = sub.manifest
    r = Rejected(submission_id=sub.submission_id, account_id=sub.account_id, public_key=m.public_key, kind=m.kind,
                 task=m.task, nonce=m.nonce, file=sub.listed.payload_file, reason=reason, detail=detail,
                 received_at=sub.listed.received_at)
    return {"status": "rejected", "manifest_file": sub.listed.manifest_file, **asdict(r)}


def _unreadable_record(listed: Listed, detail: str, drop: Path) -> dict:
    """The result record of a manifest that did not parse; its id hashes the name and the bytes."""
    h = hashlib.blake2b(listed.manifest_file.encode("utf-8"), digest_size=32)
    try:
        with open(drop / listed.manifest_file, "rb") as f:
            h.update(f.read())
    except OSError:
        pass
    r = Rejected(submission_id=f"{h.hexdigest()[:16]}-unreadable", account_id=None, public_key=None, kind=None,
                 task=None, nonce=None, file=listed.payload_file, reason=UNREADABLE, detail=detail,
                 received_at=listed.received_at)
    return {"status": "rejected", "manifest_file": listed.manifest_file, **asdict(r)}


# ------------------------------------------------------------------------------------------ decode helpers


def read_payload_table(data: bytes, name: str) -> pa.Table:
    """Parse payload bytes as Parquet, Arrow IPC (.arrow/.feather/.ipc) or CSV by the name's suffix."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(pa.BufferReader(data))
        if suffix in (".arrow", ".feather", ".ipc"):
            try:
                return pa_feather.read_table(pa.BufferReader(data))
            except (pa.ArrowInvalid, OSError):
                return pa.ipc.open_stream(pa.BufferReader(data)).read_all()
        if suffix == ".csv":
            return pa_csv.read_csv(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _Reject(UNREADABLE, f"{name}: cannot read as {suffix[1:]}: {e}") from None
    raise _Reject(UNREADABLE, f"{name}: unsupported payload format '{suffix}'; use .parquet, .pq, .arrow, "
                              f".feather, .ipc or .csv")


def _float64_column(col: pa.ChunkedArray) -> np.ndarray:
    """A feature column as float64 with nulls as NaN, -0.0 as 0.0 and one NaN bit pattern."""
    arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    arr[arr == 0.0] = 0.0
    arr[np.isnan(arr)] = np.nan
    return arr


def row_hashes(table: pa.Table, feature_names: Sequence[str], label: str) -> np.ndarray:
    """BLAKE2b-64 of each row's little-endian float64 features then its label bytes, as uint64.

    Label bytes: int64 little-endian for an integer label, UTF-8 for a string label. Same definition as
    rewards/duplicates.py (kept separate because pipelines never imports rewards).
    """
    n = table.num_rows
    if feature_names:
        feats = np.ascontiguousarray(np.column_stack([_float64_column(table.column(f)) for f in feature_names]),
                                     dtype="<f8")
    else:
        feats = np.zeros((n, 0), dtype="<f8")
    lab = table.column(label)
    if pa.types.is_floating(lab.type):   # whole-number float labels hash as the integers they are
        lab = lab.cast(pa.int64())
    if pa.types.is_integer(lab.type):
        lab_np = lab.cast(pa.int64()).fill_null(0).to_numpy().astype("<i8")
        label_bytes: Iterable[bytes] = (lab_np[i : i + 1].tobytes() for i in range(n))
    else:
        label_bytes = ((v or "").encode("utf-8") for v in lab.cast(pa.string()).to_pylist())
    out = np.empty(n, dtype=np.uint64)
    for i, lb in enumerate(label_bytes):
        h = hashlib.blake2b(feats[i].tobytes(), digest_size=ROW_HASH_BYTES)
        h.update(lb)
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def _is_schema_error(e: BaseException) -> bool:
    """Whether `e` is quality's SchemaError, recognised by class name (pipelines never imports quality)."""
    return any(c.__name__ == "SchemaError" for c in type(e).__mro__)


def _with_submission_columns(table: pa.Table, sub: Submission) -> pa.Table:
    """Append `_submission_id`, `_contributor` (account id) and `_row` (0-based index)."""
    n = table.num_rows
    table = table.append_column("_submission_id", pa.array([sub.submission_id] * n, pa.string()))
    table = table.append_column("_contributor", pa.array([sub.account_id] * n, pa.string()))
    return table.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))


# ----------------------------------------------------------------------------------------------- DoFns


class ParseManifestFn(beam.DoFn):
    """Read one manifest; one that does not parse, or is not named after its payload, is `unreadable`."""

    def __init__(self, drop: str):
        self.drop = drop

    def process(self, listed: Listed) -> Iterator[Any]:
        drop = Path(self.drop)
        try:
            m = read_manifest(drop / listed.manifest_file)
        except ManifestError as e:
            yield TaggedOutput(REJECTED, _unreadable_record(listed, str(e), drop))
            return
        if m.payload != listed.payload_file:
            yield TaggedOutput(REJECTED, _unreadable_record(
                listed, f"{listed.manifest_file}: field 'payload': names '{m.payload}', but the manifest of a "
                        f"payload must be named '<payload>{MANIFEST_SUFFIX}'", drop))
            return
        yield Submission(listed=listed, manifest=m)


class VerifyFn(beam.DoFn):
    """Check payload presence, size, digest, signature, key, task and kind-for-role, in that order."""

    def __init__(self, drop: str, accounts: dict, task_names: dict, max_payload_bytes: int):
        self.drop = drop
        self.accounts = accounts
        self.task_names = task_names      # name -> whether predictions are open (the task has a challenge)
        self.max_payload_bytes = max_payload_bytes

    def process(self, sub: Submission) -> Iterator[Any]:
        try:
            sub = self._verify(sub)
        except _Reject as r:
            yield TaggedOutput(REJECTED, _rejected_record(r.sub or sub, r.reason, r.detail))
            return
        yield sub.manifest.public_key, sub

    def _verify(self, sub: Submission) -> Submission:
        m = sub.manifest
        path = Path(self.drop) / m.payload
        if not path.is_file():
            raise _Reject(UNREADABLE, f"{m.payload}: payload named by {sub.listed.manifest_file} is missing from drop/")
        size = path.stat().st_size
        if size > self.max_payload_bytes:
            raise _Reject(TOO_LARGE, f"{m.payload}: {size} bytes is over max_payload_bytes={self.max_payload_bytes}")
        data = path.read_bytes()
        if len(data) != m.size:
            raise _Reject(DIGEST_MISMATCH, f"{m.payload}: size is {len(data)} bytes but the manifest says {m.size}")
        digest = payload_digest(data)
        if digest != m.digest:
            raise _Reject(DIGEST_MISMATCH, f"{m.payload}: BLAKE2b-256 digest is {digest}, the manifest says {m.digest}")
        try:
            verify_signature(m)
        except SignatureError as e:
            raise _Reject(BAD_SIGNATURE, str(e)) from None
        acct = self.accounts.get(m.public_key)
        if acct is None:
            raise _Reject(UNKNOWN_KEY, f"{m.payload}: public key {m.public_key} is not registered; register it first")
        # From here on the key is proven and registered: rejections are attributed to its account.
        sub = Submission(listed=sub.listed, manifest=m, account_id=acct[0], role=acct[1])
        if m.kind in TABLE_KINDS and m.task not in self.task_names:
            known = ", ".join(sorted(self.task_names)) or "none"
            raise _Reject(UNKNOWN_TASK, f"{m.payload}: task '{m.task}' is not a known task (known: {known})", sub)
        allowed = ROLE_KINDS.get(acct[1], ())
        if m.kind not in allowed:
            raise _Reject(KIND_NOT_ALLOWED, f"{m.payload}: kind '{m.kind}' is not allowed for role '{acct[1]}' "
                                            f"(allowed: {', '.join(allowed) or 'none'})", sub)
        if m.kind == "predictions" and not self.task_names[m.task]:
            raise _Reject(KIND_NOT_ALLOWED, f"{m.payload}: predictions are not open for task {m.task} yet", sub)
        return sub


class NonceOrderFn(beam.DoFn):
    """Per key, in nonce order: each nonce must exceed the key's last used one; repeats and lower ones are replays."""

    def __init__(self, last_nonce: dict):
        self.last_nonce = last_nonce

    def process(self, keyed: tuple[str, Iterable[Submission]]) -> Iterator[Any]:
        key, subs = keyed
        last = self.last_nonce.get(key)
        for sub in sorted(subs, key=lambda s: (s.manifest.nonce, s.listed.received_at, s.listed.manifest_file)):
            n = sub.manifest.nonce
            if last is not None and n <= last:
                yield TaggedOutput(REJECTED, _rejected_record(
                    sub, REPLAYED_NONCE, f"{sub.listed.payload_file}: nonce {n} is not above the last used nonce "
                                         f"{last} of key {key}; nonces must strictly increase"))
                continue
            last = n
            yield sub


class DecodeFn(beam.DoFn):
    """Decode the verified payload to an Arrow table: cast and gate datasets, parse weights; add id columns."""

    def __init__(self, drop: str, epoch: int, accounts: dict, tasks: dict, cast: Callable, gate: Callable,
                 read: Callable | None, cast_predictions: Callable | None = None,
                 gate_predictions: Callable | None = None, weight_rules: WeightRules | None = None):
        self.drop = drop
        self.epoch = epoch
        self.accounts = accounts
        self.tasks = tasks
        self.cast = cast
        self.gate = gate
        self.read = read
        self.cast_predictions = cast_predictions
        self.gate_predictions = gate_predictions
        self.weight_rules = weight_rules or WeightRules(epoch)

    def process(self, sub: Submission) -> Iterator[Any]:
        try:
            table = self._decode(sub)
        except _Reject as r:
            yield TaggedOutput(REJECTED, _rejected_record(sub, r.reason, r.detail))
            return
        yield sub, table

    def _payload_bytes(self, sub: Submission) -> bytes:
        """The payload again, checked against the verified digest (it must not change under us)."""
        m = sub.manifest
        try:
            data = (Path(self.drop) / m.payload).read_bytes()
        except OSError as e:
            raise _Reject(UNREADABLE, f"{m.payload}: cannot read ({e.strerror or e})") from None
        if payload_digest(data) != m.digest:
            raise _Reject(DIGEST_MISMATCH, f"{m.payload}: changed while being ingested; digest no longer matches")
        return data

    def _read(self, sub: Submission, data: bytes) -> pa.Table:
        name = sub.manifest.payload
        if self.read is None:
            return read_payload_table(data, name)
        try:
            return self.read(Path(self.drop) / name)
        except Exception as e:  # the injected reader's own error types are unknown here
            if _is_schema_error(e):
                raise _Reject(SCHEMA_MISMATCH, str(e)) from None
            raise _Reject(UNREADABLE, f"{name}: cannot read: {type(e).__name__}: {e}") from None

    def _decode(self, sub: Submission) -> pa.Table:
        m = sub.manifest
        data = self._payload_bytes(sub)
        if m.kind == "weights":
            try:
                table = parse_weights(data, m.payload, validator_key=m.public_key, rules=self.weight_rules,
                                      accounts=self.accounts)
            except WeightsRejected as w:
                raise _Reject(w.reason, w.detail) from None
            return _with_submission_columns(table, sub)
        table = self._read(sub, data)
        task = self.tasks[m.task]
        if m.kind == "predictions":
            if self.cast_predictions is None or self.gate_predictions is None:
                raise _Reject(KIND_NOT_ALLOWED, f"{m.payload}: this ingest run does not check predictions")
            table = self._shape(table, task, m, self.cast_predictions, self.gate_predictions, "predictions")
            return _with_submission_columns(table, sub)
        table = self._shape(table, task, m, self.cast, self.gate, "task")
        hashes = row_hashes(table, list(task.feature_names()), task.label)
        table = _with_submission_columns(table, sub)
        return table.append_column("_row_hash", pa.array(hashes, pa.uint64()))

    @staticmethod
    def _shape(table: pa.Table, task: Any, m: Manifest, cast: Callable, gate: Callable, what: str) -> pa.Table:
        """Cast to the expected schema, then run the quality gate; either failure rejects with its reason."""
        try:
            table = cast(table, task, file=m.payload)
        except Exception as e:  # the caller's cast raises quality's SchemaError, which pipelines cannot import
            if _is_schema_error(e):
                raise _Reject(SCHEMA_MISMATCH, str(e)) from None
            raise _Reject(SCHEMA_MISMATCH, f"{m.payload}: does not cast to {what} '{m.task}': "
                                           f"{type(e).__name__}: {e}") from None
        try:
            report = gate(table, task)
        except Exception as e:  # a gate that cannot run on this table fails it, with the reason
            raise _Reject(QUALITY_FAILED, f"{m.payload}: quality gate for {what} '{m.task}' could not run: "
                                          f"{type(e).__name__}: {e}") from None
        if not report.success:
            raise _Reject(QUALITY_FAILED, f"{m.payload}: quality gate for {what} '{m.task}' failed: {report.summary()}")
        return table


class WriteLakeFn(beam.DoFn):
    """Write one decoded table to lake/epoch=E/kind=K/task=T/<digest>-<key>.parquet unless it already exists."""

    def __init__(self, lake: str, epoch: int):
        self.lake = lake
        self.epoch = epoch

    def process(self, element: tuple[Submission, pa.Table]) -> Iterator[dict]:
        sub, table = element
        m = sub.manifest
        task_dir = WEIGHTS_TASK if m.kind == "weights" else m.task
        path = lake_path(Path(self.lake), self.epoch, m.kind, task_dir, m.digest, m.public_key)
        write_if_absent(table, path)
        a = Accepted(submission_id=sub.submission_id, account_id=sub.account_id or "", public_key=m.public_key,
                     kind=m.kind, task=m.task, digest=m.digest, nonce=m.nonce, rows=table.num_rows,
                     lake_path=str(path), received_at=sub.listed.received_at, file=m.payload)
        yield {"status": "accepted", "manifest_file": sub.listed.manifest_file, **asdict(a)}


def lake_path(lake: Path, epoch: int, kind: str, task: str, digest: str, public_key: str) -> Path:
    """Where a submission's rows live: addressed by payload digest and sender within epoch, kind and task.

    The sender is part of the address because the landed rows carry it: a copy of someone else's file from
    another key is other content, and must land so that scoring can find it a duplicate.
    """
    return lake / f"epoch={epoch}" / f"kind={kind}" / f"task={task}" / f"{digest}-{public_key[:16]}.parquet"


def write_if_absent(table: pa.Table, path: Path) -> bool:
    """Write Parquet atomically unless `path` exists (first writer wins); True when this call wrote it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp)
        try:
            os.link(tmp, path)            # fails if the file appeared meanwhile: never overwrite
        except FileExistsError:
            return False
        except OSError:                   # a filesystem without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        if tmp.exists():
            tmp.unlink()


# ------------------------------------------------------------------------------------- composite transforms


class ReadManifests(beam.PTransform):
    """The listed manifests as elements, spread over workers and parsed; `rejected` holds unreadable ones."""

    def __init__(self, drop: Path, listed: Sequence[Listed]):
        super().__init__()
        self.drop = str(drop)
        self.listed = list(listed)

    def expand(self, pbegin):
        return (pbegin
                | "List" >> beam.Create(self.listed)
                | "Spread" >> beam.Reshuffle()
                | "Parse" >> beam.ParDo(ParseManifestFn(self.drop)).with_outputs(REJECTED, main="ok"))


class Verify(beam.PTransform):
    """Authenticity and admissibility checks; passing submissions come out keyed by public key."""

    def __init__(self, drop: Path, registry: Registry, max_payload_bytes: int):
        super().__init__()
        self.fn = VerifyFn(str(drop), dict(registry.accounts),
                           {name: bool(getattr(t, "challenge", None)) for name, t in registry.tasks.items()},
                           max_payload_bytes)

    def expand(self, pcoll):
        return pcoll | "Check" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="ok")


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
    """Payload bytes to a task-shaped Arrow table with id columns and row hashes."""

    def __init__(self, drop: Path, epoch: int, registry: Registry, cast: Callable, gate: Callable,
                 read: Callable | None, cast_predictions: Callable | None = None,
                 gate_predictions: Callable | None = None):
        super().__init__()
        rules = WeightRules(epoch, registry.commit_reveal, registry.reveal_epochs, dict(registry.commitments))
        self.fn = DecodeFn(str(drop), epoch, dict(registry.accounts), dict(registry.tasks), cast, gate, read,
                           cast_predictions, gate_predictions, rules)

    def expand(self, pcoll):
        return pcoll | "ToArrow" >> beam.ParDo(self.fn).with_outputs(REJECTED, main="ok")


class WriteLake(beam.PTransform):
    """Content-addressed, idempotent Parquet writes; emits one accepted record per submission."""

    def __init__(self, lake: Path, epoch: int):
        super().__init__()
        self.lake = str(lake)
        self.epoch = epoch

    def expand(self, pcoll):
        return pcoll | "Write" >> beam.ParDo(WriteLakeFn(self.lake, self.epoch))


class WriteResults(beam.PTransform):
    """Result records as JSON lines under a run directory, for the driver to read back on any runner."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def expand(self, pcoll):
        return (pcoll
                | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
                | "Write" >> beam.io.WriteToText(self.prefix, file_name_suffix=RESULTS_SUFFIX))


# ---------------------------------------------------------------------------------------------- the driver


def received_at(path: Path) -> str:
    """A file's modification time as an ISO-8601 UTC string (when the submission arrived)."""
    return datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(timespec="microseconds")


def list_manifests(drop: Path) -> list[Listed]:
    """Manifests waiting in drop/, by name; temporary names (leading '.') are not submissions yet."""
    if not drop.is_dir():
        return []
    out = []
    for p in sorted(drop.glob("*" + MANIFEST_SUFFIX)):
        if p.name.startswith(".") or not p.is_file() or p.name == MANIFEST_SUFFIX:
            continue
        try:
            out.append(Listed(manifest_file=p.name, received_at=received_at(p)))
        except FileNotFoundError:        # taken away between listing and stat
            continue
    return out


def _read_records(run_dir: Path) -> list[dict]:
    records = []
    for shard in sorted(run_dir.glob(RESULTS_PREFIX + "*" + RESULTS_SUFFIX)):
        with open(shard, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def _free_name(dest: Path, payload_file: str) -> str:
    """`payload_file`, or `stem~N.ext`, so that neither the payload nor its manifest name is taken in `dest`."""
    p = Path(payload_file)
    n = 0
    name = payload_file
    while (dest / name).exists() or (dest / (name + MANIFEST_SUFFIX)).exists():
        n += 1
        name = f"{p.stem}~{n}{p.suffix}"
    return name


def move_submission(drop: Path, manifest_file: str, dest: Path) -> None:
    """Move a manifest and its payload (when present) into `dest`, renaming rather than overwriting."""
    dest.mkdir(parents=True, exist_ok=True)
    payload_file = manifest_file[: -len(MANIFEST_SUFFIX)]
    name = _free_name(dest, payload_file)
    if (drop / payload_file).is_file():
        shutil.move(drop / payload_file, dest / name)
    if (drop / manifest_file).exists():
        shutil.move(drop / manifest_file, dest / (name + MANIFEST_SUFFIX))


def run_ingest(*, drop: Path, lake: Path, archive: Path, quarantine: Path, epoch: int, registry: Registry,
               cast: Callable, gate: Callable, max_payload_bytes: int,
               pipeline_args: Sequence[str] = (), read: Callable | None = None,
               cast_predictions: Callable | None = None, gate_predictions: Callable | None = None) -> IngestResult:
    """Ingest every submission waiting in `drop` for `epoch`: lake the accepted, quarantine the rest.

    `cast(table, task, file=name)` shapes a dataset to its task (raising quality's SchemaError), `gate(table,
    task)` returns a report with `.success` and `.summary()`; `cast_predictions`/`gate_predictions` do the same for
    predictions on a task's challenge (without them predictions are refused); `read(path)` optionally replaces the built-in
    Parquet/IPC/CSV reader. `pipeline_args` reach Beam unchanged (e.g. `--runner=...`).
    """
    drop, lake, archive, quarantine = Path(drop), Path(lake), Path(archive), Path(quarantine)
    listed = list_manifests(drop)
    if not listed:
        return IngestResult(epoch=epoch, accepted=(), rejected=())
    quiet_beam_logging()
    with tempfile.TemporaryDirectory(prefix="tributary-ingest-") as tmp:
        run_dir = Path(tmp)
        with beam.Pipeline(options=build_options(pipeline_args)) as p:
            parsed = p | "ReadManifests" >> ReadManifests(drop, listed)
            verified = parsed.ok | "Verify" >> Verify(drop, registry, max_payload_bytes)
            ordered = verified.ok | "CheckNonces" >> CheckNonces(registry.last_nonce)
            decoded = ordered.ok | "Decode" >> Decode(drop, epoch, registry, cast, gate, read,
                                                                  cast_predictions, gate_predictions)
            accepted = decoded.ok | "WriteLake" >> WriteLake(lake, epoch)
            _ = ((accepted, parsed[REJECTED], verified[REJECTED], ordered[REJECTED], decoded[REJECTED])
                 | "AllResults" >> beam.Flatten()
                 | "WriteResults" >> WriteResults(str(run_dir / RESULTS_PREFIX)))
        records = _read_records(run_dir)

    by_manifest = {r["manifest_file"]: r for r in records}
    missing = sorted({x.manifest_file for x in listed} - set(by_manifest))
    if missing or len(records) != len(listed):
        raise IngestError(f"ingest of epoch {epoch} lost track of {', '.join(missing) or 'some submissions'}; "
                          f"nothing was moved, rerun the epoch")
    acc_fields = [f.name for f in fields(Accepted)]
    rej_fields = [f.name for f in fields(Rejected)]
    accepted_out, rejected_out = [], []
    for r in records:
        if r["status"] == "accepted":
            move_submission(drop, r["manifest_file"], archive / f"epoch={epoch}")
            accepted_out.append(Accepted(**{k: r[k] for k in acc_fields}))
        else:
            move_submission(drop, r["manifest_file"], quarantine / f"epoch={epoch}")
            rejected_out.append(Rejected(**{k: r[k] for k in rej_fields}))
    accepted_out.sort(key=lambda a: (a.received_at, a.submission_id))
    rejected_out.sort(key=lambda r: (r.received_at, r.submission_id))
    return IngestResult(epoch=epoch, accepted=tuple(accepted_out), rejected=tuple(rejected_out))
