"""The stages of an epoch, each a plain function of the home and the previous stage's value.

`engine.epoch` runs them in order; the Dagster assets call them one per asset. Each name below is imported from
its stage's module when first used (PEP 562 __getattr__), so a command that runs one stage does not import the
others (numpy, the valuation, Yuma) before it needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

_WHERE = {
    "ConsensusOutcome": "consensus", "ValidatorWeights": "consensus", "run_consensus": "consensus",
    "validator_weights": "consensus",
    "IngestSummary": "ingest", "LakeSnapshot": "ingest", "ingest": "ingest", "lake_snapshot": "ingest",
    "revalidate": "ingest",
    "EpochScores": "scoring", "SubmissionScore": "scoring", "score": "scoring",
    "account_names": "settle", "build_settlement": "settle", "settle": "settle",
}

__all__ = ["ConsensusOutcome", "EpochScores", "IngestSummary", "LakeSnapshot", "SubmissionScore", "ValidatorWeights",
           "account_names", "build_settlement", "ingest", "lake_snapshot", "revalidate", "run_consensus", "score",
           "settle", "validator_weights"]

if TYPE_CHECKING:
    from engine.stages.consensus import ConsensusOutcome, ValidatorWeights, run_consensus, validator_weights
    from engine.stages.ingest import IngestSummary, LakeSnapshot, ingest, lake_snapshot, revalidate
    from engine.stages.scoring import EpochScores, SubmissionScore, score
    from engine.stages.settle import account_names, build_settlement, settle


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Stages(types.ModuleType):
    """Importing a stage's module binds it on this package under its own name; `ingest` and `settle` name both a
    module and the function exported here, and the package's `ingest`/`settle` must stay the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == name and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Stages
