"""The stages of an epoch, each a plain function of the home and the previous stage's value.

`engine.epoch` runs them in order; the Dagster assets call them one per asset.
"""

from engine.stages.consensus import ConsensusOutcome, ValidatorWeights, run_consensus, validator_weights
from engine.stages.ingest import IngestSummary, LakeSnapshot, ingest, lake_snapshot, revalidate
from engine.stages.scoring import EpochScores, SubmissionScore, score
from engine.stages.settle import account_names, build_settlement, settle

__all__ = ["ConsensusOutcome", "EpochScores", "IngestSummary", "LakeSnapshot", "SubmissionScore", "ValidatorWeights",
           "account_names", "build_settlement", "ingest", "lake_snapshot", "revalidate", "run_consensus", "score",
           "settle", "validator_weights"]
