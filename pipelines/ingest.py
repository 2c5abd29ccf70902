"""Epoch ingest (DESIGN 4.2, docs/PROTOCOL.md): verify what strangers put in drop/, land what passes in the lake.

The Beam graph, one coarse element per submission; every stage sends rejects to a `rejected` side output:

    Parse+Signature ─► Admit (key, task, kind, payload) ─► CheckNonces ─► Decode (cast, stats, stage)
        ─► Gate (one Great Expectations run per task) ─► WriteLake ─┐
     rejected / waiting from every stage ───────────────────────────┴─► WriteResults (JSON lines)

The signature is checked first, over the manifest alone: nothing from a manifest that does not verify is believed.
The driver never moves a file: it returns each decision with the files it covers, the caller commits them to the
ledger and only then moves the files (`pipelines.drop.move_files`), so a crash at any point is repaired by a rerun.

Here: the graph (composite transforms, `build_pipeline`) and the driver (`run_ingest`). The records it decides are in
pipelines/records.py, the DoFns (the checks) in pipelines/verify.py, the listing of drop/ and the moves out of it in
pipelines/drop.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime

import apache_beam as beam

from pipelines import storage
from pipelines.drop import DropScan, standalone_records
from pipelines.errors import IngestError
from pipelines.options import build_options, quiet_beam_logging
from pipelines.records import Accepted, IngestResult, Listed, Registry, Rejected, Sighting
from pipelines.verify import (
    REJECTED, WAITING, AdmitFn, DecodeFn, GateFn, NonceOrderFn, ParseFn, WriteLakeFn,
)

RESULTS_PREFIX = "results"
RESULTS_SUFFIX = ".jsonl"


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
    """Key, task, kind and payload checks; passing submissions come out keyed by public key, and so does the nonce
    of each verified one rejected here (a SpentNonce), for the nonce check of the key's later arrivals."""

    def __init__(self, drop: str, registry: Registry, max_payload_bytes: int):
        super().__init__()
        self.fn = AdmitFn(drop, dict(registry.accounts),
                          {name: bool(getattr(t, "challenge", None)) for name, t in registry.tasks.items()},
                          max_payload_bytes, frozenset(registry.closed_tasks))

    def expand(self, pcoll):
        return pcoll | "Check" >> beam.ParDo(self.fn).with_outputs(REJECTED, WAITING, main="ok")


class CheckNonces(beam.PTransform):
    """Group by key and walk each key's submissions in arrival order: each nonce must be above the highest nonce of
    every earlier verified submission of the key (the registry's last used nonce, and earlier arrivals of this run)."""

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


def run_ingest(*, drop: str, lake: str, staging: str, epoch: int, registry: Registry, scan: DropScan,
               sightings: Mapping[str, Sighting], max_payload_bytes: int, docs_dir: str | None = None,
               pipeline_args: Sequence[str] = ()) -> IngestResult:
    """Decide every submission in `scan` (names already decided are left out by the caller); move nothing.

    `sightings` has an entry for every name in the scan. Accepted rows are in the lake when this returns; the caller
    records the result and then calls `move_files`. `pipeline_args` reach Beam unchanged (e.g. `--runner=...`).
    """
    drop, lake, staging = str(drop), str(lake), str(staging)
    records = standalone_records(scan, sightings)
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


def iso(ts: datetime) -> str:
    """Ingest's timestamps: ISO-8601 with microseconds."""
    return ts.isoformat(timespec="microseconds")
