"""Partitions are the ledger's epochs: key "N" is ledger epoch N, and a run for it reads and writes epoch N alone.

Dynamic, not time windows: an epoch opens when the one before it settles (after `epoch_seconds`, or early with
`epoch run --close`), so the ledger, not a calendar, says which epochs exist. Keys are added as epochs open (by the
settle asset, the ledger sync and `tributary ui`); an epoch the ledger has not opened never becomes a partition.
"""

from __future__ import annotations

import dagster as dg

EPOCH_PARTITIONS = dg.DynamicPartitionsDefinition(name="epoch")


def partition_key(epoch: int) -> str:
    return str(epoch)


def epoch_of(context) -> int:
    """The ledger epoch a run's partition names; a key that is not an epoch number fails the run with the rule."""
    key = context.partition_key
    if not key.isdigit() or int(key) < 1:
        raise dg.Failure(f"partition {key!r} is not an epoch: partitions are ledger epoch numbers 1, 2, 3, …")
    return int(key)
