"""What ingest decides about each submission, as records: the registry it judges against, what it saw in drop/,
and the accepted and rejected results (JSON-able dicts on their way through the Beam graph)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from pipelines.manifest import MANIFEST_SUFFIX, Manifest


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


def record(status: str, obj: Any) -> dict:
    """An Accepted or Rejected as the JSON-able dict a stage emits, with its `status`."""
    return {"status": status, **asdict(obj)}


def rejected_record(sub: Submission, reason: str, detail: str, *, nonce_used: bool = False) -> dict:
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
    return record("rejected", r)


def unverified_record(name: str, files: Sequence[str], sighting: Sighting, reason: str, detail: str) -> dict:
    """The record of something nobody is proven to have sent: attributed to no account, using no nonce."""
    r = Rejected(submission_id=f"unverified-{sighting.arrival}", arrival=sighting.arrival, account_id=None,
                 public_key=None, kind=None, task=None, nonce=None, digest=None, verified=False, file=name,
                 files=tuple(files), reason=reason, detail=detail, received_at=sighting.first_seen_at)
    return record("rejected", r)


def waiting_record(listed: Listed) -> dict:
    """A manifest whose payload is not all there yet: it stays in drop/ for a later run."""
    return {"status": "waiting", "manifest_file": listed.manifest_file, "arrival": listed.arrival}



def iso(ts: datetime) -> str:
    """Ingest's timestamps: ISO-8601 with microseconds."""
    return ts.isoformat(timespec="microseconds")
