"""The drop-folder sensor and the settlement schedule."""


import json
from datetime import datetime, timezone

import dagster as dg

from assets.epoch_assets import EPOCH_ASSETS, contribution_values, contributions, validated_contributions
from assets.partitions import EPOCH_PARTITIONS
from assets.resources import TributaryHome
from pipelines.manifest import MANIFEST_SUFFIX

ingest_job = dg.define_asset_job(
    "ingest_epoch",
    selection=dg.AssetSelection.assets(contributions, validated_contributions, contribution_values),
    description="Ingest, validate and value what is in drop/ for the open epoch.",
)
settle_job = dg.define_asset_job(
    "settle_epoch",
    selection=dg.AssetSelection.assets(*EPOCH_ASSETS),
    description="Ingest what is left, run consensus and settle the epoch into the ledger.",
)


def drop_listing(tributary: TributaryHome) -> tuple[int, str]:
    """(count, digest) of the complete-looking submissions waiting in drop/: names and sizes, never file times.

    A sender chooses a file's mtime, so a cursor built on mtimes could be held back (a backdated file is never
    noticed) or pushed forward; the digest of what is listed changes whenever anything lands, grows or leaves.
    """
    from pipelines.storage import list_folder, listing_digest

    entries = [e for e in list_folder(str(tributary.open().paths.drop)) if not e.name.startswith(".")]
    manifests = [e for e in entries if e.name.endswith(MANIFEST_SUFFIX)]
    return len(manifests), listing_digest(entries)


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def drop_folder_sensor(context: dg.SensorEvaluationContext, tributary: TributaryHome) -> dg.SensorResult:
    """Request an ingest run of the current epoch's partition when what waits in drop/ changes."""
    count, listing = drop_listing(tributary)
    seen = json.loads(context.cursor) if context.cursor else {"listing": None}
    if count == 0 or listing == seen.get("listing"):
        return dg.SensorResult(skip_reason=f"no new submissions in drop/ ({count} waiting)")
    now = datetime.now(timezone.utc)
    partition = EPOCH_PARTITIONS.get_partition_key_for_timestamp(now.timestamp())
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{partition}:{listing}", partition_key=partition,
                                    tags={"tributary/waiting": str(count)})],
        cursor=json.dumps({"listing": listing}),
    )


@dg.schedule(job=settle_job, cron_schedule="0 * * * *", execution_timezone="UTC", name="settle_closed_epoch",
             default_status=dg.DefaultScheduleStatus.RUNNING, description="When an epoch's window closes, settle it.")
def settlement_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """At the top of each hour, request the window that just closed.

    Not build_schedule_from_partitioned_job: EPOCH_PARTITIONS includes the open window (end_offset=1), so that
    helper would request the window that has just opened instead of the one that closed.
    """
    tick = context.scheduled_execution_time or datetime.now(timezone.utc)
    closed_at = tick.timestamp() - 1  # a moment before the tick lies in the window that just closed
    if closed_at < EPOCH_PARTITIONS.start.timestamp():
        return dg.SkipReason("no epoch window has closed yet")
    partition = EPOCH_PARTITIONS.get_partition_key_for_timestamp(closed_at)
    return dg.RunRequest(run_key=partition, partition_key=partition)
