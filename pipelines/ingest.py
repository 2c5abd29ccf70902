"""Epoch ingest (DESIGN 4.2, docs/PROTOCOL.md): verify what strangers put in drop/, land what passes in the lake.

The driver: it lists nothing itself (pipelines/drop.py does), builds the Beam graph (pipelines/transforms.py) only
when there is a manifest to decide, runs it on the home's runner, and reads back one result file per submission.
The signature is checked first, over the manifest alone: nothing from a manifest that does not verify is believed.
The driver never moves a file: it returns each decision with the files it covers, the caller commits them to the
ledger and only then moves the files (`pipelines.drop.move_files`), so a crash at any point is repaired by a rerun.

Nothing here imports Beam until a pipeline is built: an epoch with an empty drop/ pays no Beam import.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields

from pipelines import storage
from pipelines.drop import DropScan, standalone_records
from pipelines.errors import IngestError
from pipelines.records import Accepted, IngestResult, Listed, Registry, Rejected, Sighting

RESULTS_FOLDER = "results"
MAX_RESULT_BYTES = 1 << 20  # one decision record: a few hundred bytes, its detail included


def warm_up() -> None:
    """Import Beam and the default runner now (about a second, once per process): a long-running operator process has."""
    import apache_beam.runners.portability.fn_api_runner  # noqa: F401

    import pipelines.transforms  # noqa: F401


def _run_pipeline(pipeline_args: Sequence[str], **graph) -> None:
    """Build and run the graph, waiting for it; a runner's client (the DaskRunner's) is closed afterwards."""
    import apache_beam as beam

    from pipelines.options import build_options, quiet_beam_logging
    from pipelines.transforms import build_pipeline

    quiet_beam_logging()
    p = beam.Pipeline(options=build_options(pipeline_args))
    build_pipeline(p, **graph)
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # DaskRunner: one distributed.Client per run, never closed by Beam
        if client is not None:
            client.close()


def _read_records(folder: str) -> list[dict]:
    """The result files WriteResults left, in arrival order (each name is its submission's arrival number)."""
    from pipelines.verify import RESULT_SUFFIX

    return [json.loads(storage.read_regular(storage.join(folder, e.name), MAX_RESULT_BYTES))
            for e in storage.list_folder(folder) if e.name.endswith(RESULT_SUFFIX) and not e.name.startswith(".")]


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
        run_dir = storage.join(staging, f"run-{epoch}-{uuid.uuid4().hex[:12]}")
        results = storage.join(run_dir, RESULTS_FOLDER)
        try:
            _run_pipeline(pipeline_args, drop=drop, lake=lake, staging=run_dir, docs_dir=docs_dir, epoch=epoch,
                          registry=registry, listed=listed, max_payload_bytes=max_payload_bytes, results=results)
            pipeline_records = _read_records(results)
            # The lake files' names are on disk before the caller records them (their data was synced when staged).
            storage.sync_folders(r["lake_path"].rsplit("/", 1)[0] for r in pipeline_records
                                 if r["status"] == "accepted")
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
