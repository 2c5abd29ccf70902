"""Epochs as Dagster time windows: one partition per hour, the open window included."""

from __future__ import annotations

import dagster as dg

# Matches Settings.epoch_seconds = 3600. The partition names the clock window; the ledger numbers epochs in the
# order they settle, so a script that closes epochs early (`epoch run --close`) never collides with the UI.
EPOCH_PARTITIONS = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00", end_offset=1)
