"""The drop-folder sensor (ingest only), the ledger sync sensor and the settlement schedule."""


import json

import dagster as dg

from assets.epoch_assets import EPOCH_ASSETS, contributions
from assets.partitions import EPOCH_PARTITIONS, partition_key
from assets.resources import TributaryHome
from pipelines.manifest import MANIFEST_SUFFIX

WRITER_TAGS = {"tributary/epoch_writer": "1"}  # the home's dagster.yaml runs one such run at a time
SETTLE_TICK_CRON = "* * * * *"  # the schedule looks every minute; the home's epoch_seconds says when an epoch is due

ingest_job = dg.define_asset_job(
    "ingest_epoch", selection=dg.AssetSelection.assets(contributions), tags=WRITER_TAGS,
    description="Ingest what is in drop/ into the open epoch (valuation runs once, when the epoch settles).",
)
settle_job = dg.define_asset_job(
    "settle_epoch", selection=dg.AssetSelection.assets(*EPOCH_ASSETS), tags=WRITER_TAGS,
    description="Ingest what is left, pin the epoch, check, value, run consensus and settle it into the ledger.",
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


def _open_epoch(tributary: TributaryHome) -> int:
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch

    with open_ledger(tributary.open().paths.ledger, read_only=True) as con:
        return current_epoch(con)


def _ensure_partition(context, epoch: int) -> list:
    key = partition_key(epoch)
    if context.instance.has_dynamic_partition(EPOCH_PARTITIONS.name, key):
        return []
    return [EPOCH_PARTITIONS.build_add_request([key])]


@dg.sensor(job=ingest_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def drop_folder_sensor(context: dg.SensorEvaluationContext, tributary: TributaryHome) -> dg.SensorResult:
    """Request an ingest run of the open epoch's partition when what waits in drop/ changes (ingest only)."""
    count, listing = drop_listing(tributary)
    seen = json.loads(context.cursor) if context.cursor else {"listing": None}
    if count == 0 or listing == seen.get("listing"):
        return dg.SensorResult(skip_reason=f"no new submissions in drop/ ({count} waiting)")
    epoch = _open_epoch(tributary)
    key = partition_key(epoch)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{key}:{listing}", partition_key=key,
                                    tags={"tributary/waiting": str(count)})],
        dynamic_partitions_requests=_ensure_partition(context, epoch),
        cursor=json.dumps({"listing": listing}),
    )


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Mirror the ledger: a partition per opened epoch, and CLI-settled epochs as materializations.")
def ledger_sync(context: dg.SensorEvaluationContext, tributary: TributaryHome) -> dg.SkipReason:
    from assets.sync import sync_ledger

    result = sync_ledger(context.instance, tributary.open())
    return dg.SkipReason(f"partitions added: {list(result.partitions_added) or 'none'}; epochs reported from the "
                         f"ledger: {list(result.epochs_reported) or 'none'}")


@dg.schedule(job=settle_job, cron_schedule=SETTLE_TICK_CRON, execution_timezone="UTC", name="settle_closed_epoch",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="When the open epoch has lasted epoch_seconds, settle it (once: the run key is the epoch).")
def settlement_schedule(context: dg.ScheduleEvaluationContext, tributary: TributaryHome) -> dg.RunRequest | dg.SkipReason:
    """Request the open epoch once its window has closed.

    Catch-up after the daemon was down evaluates missed ticks now: each finds the same open epoch and the same run
    key, so at most one run is launched, and an epoch the clock did not open is never requested.
    """
    from engine.epoch import epoch_is_due

    home = tributary.open()
    due, why = epoch_is_due(home)
    if not due:
        return dg.SkipReason(why)
    key = partition_key(_open_epoch(tributary))
    if not context.instance.has_dynamic_partition(EPOCH_PARTITIONS.name, key):  # an epoch the ledger opened
        context.instance.add_dynamic_partitions(EPOCH_PARTITIONS.name, [key])
    return dg.RunRequest(run_key=f"settle:{key}", partition_key=key)
