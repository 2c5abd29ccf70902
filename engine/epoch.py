"""One epoch, stage by stage: ingest → score → weights → consensus → settle.

The CLI (`tributary epoch run`) and the Dagster assets call the same stage functions (engine/stages/); each
takes the previous stage's value, so either driver can run them in one process or hand them between steps. A
driver that wants to know where the time goes passes `on_stage` (the simulator's stage timings).
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from engine import failpoints
from engine.home import Home
from engine.lock import epoch_lock

if TYPE_CHECKING:
    from engine.stages.consensus import run_consensus, validator_weights
    from engine.stages.ingest import IngestSummary, ingest, lake_snapshot
    from engine.stages.lake_state import refresh_holdout_views
    from engine.stages.scoring import EpochScores, score
    from engine.stages.settle import build_settlement, settle
    from ledger.settlement import SettleOutcome, Settlement

# The stages' names this module uses, each imported when first needed (an epoch with nothing to score never imports
# the valuation, Yuma or settlement): run_epoch binds them as module globals, and `engine.epoch.NAME` works too.
_LAZY = {
    "run_consensus": "engine.stages.consensus", "validator_weights": "engine.stages.consensus",
    "IngestSummary": "engine.stages.ingest", "ingest": "engine.stages.ingest", "lake_snapshot": "engine.stages.ingest",
    "refresh_holdout_views": "engine.stages.lake_state",
    "EpochScores": "engine.stages.scoring", "score": "engine.stages.scoring",
    "build_settlement": "engine.stages.settle", "settle": "engine.stages.settle",
    "SettleOutcome": "ledger.settlement", "Settlement": "ledger.settlement",
}
_FIRST = ("ingest", "lake_snapshot", "score")  # what every run uses
_CLOSING = ("validator_weights", "run_consensus", "build_settlement", "settle", "refresh_holdout_views")


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _bind(*names: str) -> None:
    """Make each of `names` a global of this module (imported now if it is not yet); one already bound (a test's
    stand-in) is kept."""
    for name in names:
        if name not in globals():
            __getattr__(name)


# The stages run_epoch reports to `on_stage`, in the order they run ("view" refreshes the lake views after settling).
EPOCH_STAGES = ("ingest", "score", "weights", "consensus", "settle", "view")
StageHook = Callable[[str], AbstractContextManager[None]]


def _untimed(_stage: str) -> AbstractContextManager[None]:
    return nullcontext()


@dataclass(frozen=True)
class EpochRun:
    ingest: IngestSummary
    scores: EpochScores
    settlement: Settlement | None
    outcome: SettleOutcome | None


def run_epoch(home: Home, *, close: bool = False, on_stage: StageHook = _untimed) -> EpochRun:
    """Ingest and score the open epoch; with close=True also pin it, run consensus and settle it, opening the next.

    The whole run holds the home's epoch lock. Closing moves the epoch to `scored` before scoring: from then on
    nothing more lands in it, so a run killed anywhere and run again settles exactly the set the first run pinned.
    `on_stage(name)` wraps each stage of EPOCH_STAGES that runs (a context manager: a timer, a log line).
    """
    _bind(*_FIRST, *(_CLOSING if close else ()))  # before the lock and the stages' timers, as a module import was
    with epoch_lock(home, "epoch run --close" if close else "epoch run"):
        with on_stage("ingest"):
            summary = ingest(home)
        if close:
            pin(home, summary.epoch)
            failpoints.reach("epoch.scored")
        with on_stage("score"):
            snapshot = lake_snapshot(home, summary.epoch)  # read once: what is scored is what is settled
            scores = score(home, summary.epoch, snapshot)
        if not close:
            return EpochRun(summary, scores, None, None)
        with on_stage("weights"):
            vw = validator_weights(home, scores, snapshot)
        with on_stage("consensus"):
            consensus = run_consensus(home, vw)
        with on_stage("settle"):
            settlement = build_settlement(home, scores, consensus)
            outcome = settle(home, settlement)
        failpoints.reach("epoch.settled")
        with on_stage("view"):  # derived state: a crash before this only costs the next run time
            refresh_holdout_views(home, summary.epoch)
        return EpochRun(summary, scores, settlement, outcome)


def pin(home: Home, epoch: int) -> None:
    """Move the open epoch to `scored`: its accepted submissions are the ones its settlement will pay."""
    from ledger.db import open_ledger, transaction
    from ledger.epochs import advance

    with epoch_lock(home, "pin"), open_ledger(home.paths.ledger) as con, transaction(con):
        advance(con, epoch, "scored")


def exclude(home: Home, submission_id: str, reason: str) -> int:
    """`tributary exclude`: quarantine an accepted submission of an unsettled epoch as `operator_excluded` (the way
    out of a failing blocking check); returns its epoch. Nothing is deleted. Under the epoch lock."""
    from ledger.db import open_ledger, transaction
    from ledger.exclusions import exclude as exclude_submission

    with epoch_lock(home, "exclude"), open_ledger(home.paths.ledger) as con, transaction(con):
        return exclude_submission(con, submission_id, reason)


def epoch_status(home: Home, epoch: int) -> str:
    """The state of one epoch for a driver that names it (a Dagster partition): open | ingesting | scored | settled.

    An epoch that has not begun raises EpochOrderError: no driver may create an epoch the clock did not open."""
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch, epoch_state
    from ledger.errors import EpochOrderError

    with open_ledger(home.paths.ledger, read_only=True) as con:
        open_now = current_epoch(con)
        if epoch > open_now or epoch < 1:
            raise EpochOrderError(f"epoch {epoch} has not begun: epoch {open_now} is the open one (epochs open when "
                                  "the one before settles)" if epoch > open_now else
                                  f"epoch {epoch} is genesis or not an epoch: epochs that settle start at 1")
        return epoch_state(con, epoch)


def epoch_is_due(home: Home) -> tuple[bool, str]:
    """Whether the open epoch has lasted `epoch_seconds` (its window has closed), and a line saying so."""
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch, get_epoch
    from engine.home import utcnow

    with open_ledger(home.paths.ledger, read_only=True) as con:
        row = get_epoch(con, current_epoch(con))
    due_at = row.starts_at.timestamp() + home.settings.epoch_seconds
    left = due_at - utcnow().timestamp()
    if left <= 0:
        return True, f"epoch {row.epoch} opened {row.starts_at:%Y-%m-%d %H:%M:%S} UTC; its window has closed: settling it"
    return False, f"epoch {row.epoch} closes in {left:.0f} s (epoch_seconds = {home.settings.epoch_seconds}); not settling"


def settled_already(home: Home, epoch: int) -> str | None:
    """For `epoch run --epoch N`: a line saying N is settled (nothing to do), None when N is the open epoch; an
    error for an epoch that is not open yet. Makes a rerun after a crash safe: it never closes a later epoch."""
    from ledger.db import open_ledger
    from ledger.epochs import current_epoch, get_epoch
    from engine.errors import TributaryError

    with open_ledger(home.paths.ledger, read_only=True) as con:
        open_now = current_epoch(con)
        row = get_epoch(con, epoch)
    if epoch > open_now:
        raise TributaryError(f"--epoch {epoch}: epoch {open_now} is the open one; epoch {epoch} has not begun")
    if epoch < open_now:
        return f"epoch {epoch} is settled already (hash {row.hash[:16]}…); nothing to do"
    return None
