"""What each epoch's data added to each task's lake (table `epoch_values`, migration 10), written at settlement.

The market values an epoch's new rows in the game where the lake is always present: the values of a task's rows add
up to `gain` = U'(lake + the rows that played) - U'(lake) on the task's holdout (rewards.marginal), U' the KNN
utility above chance. A row plays when it is fresh (no duplicate), original and in a submission the originality gate
passed: `admitted_rows` of the epoch's `new_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class EpochValue:
    """One task's line of an epoch: the lake before it, the epoch's rows, and what they added on the holdout."""

    task: str
    lake_rows: int  # rows the lake held before the epoch (every earlier accepted, duplicate or unoriginal row)
    new_rows: int  # the epoch's accepted rows of this task
    admitted_rows: int  # of those, the rows admitted to the valuation game (fresh, original, not gated)
    test_rows: int  # the holdout rows the utility is measured on
    lake_utility: float  # U'(lake) on the holdout
    gain: float  # U'(lake + the rows that played) - U'(lake): what the task's data values of the epoch add up to

    @property
    def sentence(self) -> str:
        """The line a person reads: what the epoch's rows added, and against what."""
        return (f"task {self.task}: the epoch's rows added {self.gain:.6f} to the lake's KNN utility on the holdout "
                f"(U'(lake) = {self.lake_utility:.6f}, {self.lake_rows} lake rows, {self.admitted_rows} of "
                f"{self.new_rows} new rows admitted)")


COLUMNS = ("task", "lake_rows", "new_rows", "admitted_rows", "test_rows", "lake_utility", "gain")


def read_epoch_values(con: duckdb.DuckDBPyConnection, epoch: int) -> tuple[EpochValue, ...]:
    """An epoch's lines, by task; none for an epoch settled before migration 10 or a ledger read before it."""
    try:
        rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM epoch_values WHERE epoch = ? ORDER BY task",
                           [epoch]).fetchall()
    except duckdb.CatalogException:  # a ledger read (read-only) before its migration: no such table
        return ()
    return tuple(EpochValue(*r) for r in rows)
