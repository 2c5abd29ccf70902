"""The ledger is the truth; the home's Dagster instance mirrors it.

Every epoch the ledger has opened is a partition, and every settled epoch that no Dagster run materialized (it was
settled from the CLI) gets runless materializations of the epoch assets with the metadata a run would attach, read
from the ledger. `tributary ui` syncs before the UI starts; the `ledger_sync` sensor keeps it in sync while it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from assets.metadata import consensus_metadata, ingest_metadata, values_metadata
from assets.partitions import EPOCH_PARTITIONS, partition_key
from ledger.db import open_ledger
from ledger.epoch_report import epoch_numbers, epoch_report
from engine.home import Home

SOURCE_TAG = "tributary/source"  # "ledger": reported by the sync, not by a run
SETTLED_ASSET = dg.AssetKey("epoch_settlement")


@dataclass(frozen=True)
class SyncResult:
    partitions_added: tuple[str, ...]
    epochs_reported: tuple[int, ...]


def sync_home_instance(home: Home) -> SyncResult:
    """`sync_ledger` into the home's own instance (`<home>/dagster`), as `tributary ui` does before it starts."""
    with dg.DagsterInstance.from_config(str(home.paths.dagster)) as instance:
        return sync_ledger(instance, home)


def sync_ledger(instance: dg.DagsterInstance, home: Home) -> SyncResult:
    """Add a partition per opened epoch and report the settled epochs the instance has not seen (idempotent)."""
    from assets.epoch_assets import settled_epoch_metadata

    with open_ledger(home.paths.ledger, read_only=True) as con:
        opened, settled = epoch_numbers(con)
    keys = [partition_key(e) for e in opened]
    have = set(instance.get_dynamic_partitions(EPOCH_PARTITIONS.name))
    missing = [k for k in keys if k not in have]
    if missing:
        instance.add_dynamic_partitions(EPOCH_PARTITIONS.name, missing)
    materialized = instance.get_materialized_partitions(SETTLED_ASSET)
    reported = []
    for epoch in settled:
        key = partition_key(epoch)
        if key in materialized:
            continue
        with open_ledger(home.paths.ledger, read_only=True) as con:
            report = epoch_report(con, epoch)
        tags = {SOURCE_TAG: "ledger"}
        per_asset = {
            "contributions": ingest_metadata(report),
            "validated_contributions": {"ledger_epoch": epoch, "submissions": report.accepted, "rows": report.rows},
            "contribution_values": {**values_metadata(report), "settled_already": True},
            "validator_weights": {"ledger_epoch": epoch, "validators": len(report.validators), "settled_already": True},
            "consensus": {**consensus_metadata(report), "settled_already": True},
            "epoch_settlement": settled_epoch_metadata(home, epoch, settled_now=True),
        }
        for asset, metadata in per_asset.items():
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=asset, partition=key, metadata=metadata, tags=tags,
                description="settled outside Dagster (the CLI); figures read from the ledger"))
        reported.append(epoch)
    return SyncResult(tuple(missing), tuple(reported))


def main(argv: list[str] | None = None) -> None:
    """`python -m assets.sync HOME`: what `tributary ui` runs, as its own process, before the webserver starts."""
    import sys

    from engine.home import open_home

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m assets.sync HOME")
    home = open_home(args[0])
    result = sync_home_instance(home)
    print(f"Dagster instance {home.paths.dagster}: {len(result.partitions_added)} epoch partition(s) added, "
          f"{len(result.epochs_reported)} settled epoch(s) reported from the ledger", flush=True)


if __name__ == "__main__":
    main()
