"""The whole Dagster graph of Tributary: epoch assets and checks, the drop and ledger sensors, the schedule."""

from __future__ import annotations

import dagster as dg

from assets.epoch_assets import EPOCH_ASSETS, EPOCH_CHECKS
from assets.resources import TributaryHome
from assets.sensors import drop_folder_sensor, ingest_job, ledger_sync, settle_job, settlement_schedule

defs = dg.Definitions(
    assets=EPOCH_ASSETS,
    asset_checks=EPOCH_CHECKS,
    jobs=[ingest_job, settle_job],
    sensors=[drop_folder_sensor, ledger_sync],
    schedules=[settlement_schedule],
    resources={"tributary": TributaryHome()},
    # Epoch steps run one after another under one lock, so a step per process buys no parallelism, only a start-up
    # (Dagster, Beam and GX imports) per step: one process per run.
    executor=dg.in_process_executor,
)
